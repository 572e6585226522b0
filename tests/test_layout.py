"""The import structure: commands sit on top of what they call, and no module imports itself back.

Every import of the product code counts, at the top of a file or inside a function (an import placed
inside a function to dodge a cycle is still a cycle).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("evaluate", "reproduce")  # command-line programs: nothing imports them


def product_modules() -> dict[str, Path]:
    """{dotted module name: file} of the tracked product code (no tests, benchmarks, examples)."""
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    modules = {}
    for name in files:
        if name.startswith(("tests/", "benchmarks/", "examples/")):
            continue
        parts = list(Path(name).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = REPO / name
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules a file imports (`import a.b`, `from a.b import c`: a.b, or a.b.c when it
    is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = product_modules()
    assert {"evaluate", "protocol", "aggregate", "metrics"} <= set(modules)
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_nothing_imports_a_command(graph):
    importers = {cmd: sorted(m for m, deps in graph.items() if cmd in deps) for cmd in COMMANDS}
    assert importers == {cmd: [] for cmd in COMMANDS}


def test_the_import_graph_has_no_cycle(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError(
                    f"import cycle: {' -> '.join(path[path.index(dep) :] + [dep])}"
                )
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_protocol_imports_only_what_it_stands_on(graph):
    allowed = {
        "config",
        "dataset_dir",
        "embeddings",
        "fileio",
        "metrics",
        "models",
        "splits",
        "preprocess",
        "preprocess.frontend",
        "preprocess.melstore",
    }
    assert graph["protocol"] <= allowed
    above = {"evaluate", "aggregate", "case_studies", "external", "reproduce", "tables", "train"}
    assert not any(graph[m] & above for m in allowed if m in graph)

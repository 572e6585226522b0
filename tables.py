"""Render evaluation results in the layout of the paper's Tables 2-4 (Choi et al., ISMIR 2019), with the published
numbers and the difference (ours - paper) next to ours for FMA and MSD, plus a clearly labelled generalized zero-shot
table that goes beyond the paper.

Input: result records as written by evaluate.py (results.json is a list of them; see notes/CONTRACTS.md):
    {"dataset": "fma", "model": "embedding" | "classification", "side_info": "instrument-count",
     "train": "(A+B)-X", "test": "(B+C)-Y", "task": "annotation" | "retrieval",
     "part": "all" | "seen" | "unseen" | "harmonic", <metric>: float, "evaluated": int, "skipped": int}
Metric keys are the paper's names: AUC-i, MAP-i, P@K (annotation), AUC-l, MAP-l (retrieval).  An optional "run" key
(e.g. a run directory name) is shown as a column when present, to tell apart runs that share every other field.

Placement (records with part "all" only go into the paper's tables):
    Table 2   annotation, tests B-Y, C-Y, (B+C)-Y, B-(X+Y), C-(X+Y), (B+C)-(X+Y); rows grouped by train setup
    Table 3   retrieval, tests (B+C)-Y and (A+B+C)-Y
    Table 4   retrieval, train A-X, test B-X, embedding vs classification model (only when both models are there)
    Beyond the paper: generalized zero-shot view   records with part seen / unseen / harmonic
    Other results   anything else (e.g. B-X retrieval of a run not trained on A-X), so nothing is dropped silently
The paper's setup names and their order come from reference/paper_tables.csv, the published numbers' own file.

Formats: "table" (aligned plain text, 4 decimals), "markdown" (GitHub tables), "csv" and "json" (one row per
(record, metric) with the published value and the difference; every record, whatever its placement).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metrics import harmonic_mean

PAPER_TABLES_PATH = Path(__file__).resolve().parent / "reference" / "paper_tables.csv"
FORMATS = ("table", "markdown", "csv", "json")
PARTS = ("all", "seen", "unseen", "harmonic")
GZSL_PARTS = ("seen", "unseen", "harmonic")
IDENTITY_KEYS = ("dataset", "model", "side_info", "train", "test", "task")
METRIC_ORDER = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10", "AUC-l", "MAP-l")
METRIC_PATTERN = re.compile(r"^(AUC-[il]|MAP-[il]|P@\d+)$")
LONG_FIELDS = ("dataset", "model", "side_info", "train", "test", "task", "part", "run", "table", "metric", "value",
               "paper", "diff", "evaluated", "skipped")
SKIPPED_NOTE = {
    "annotation": "skipped = test tracks whose ground truth over the test labels is all negative or all positive "
                  "(no defined AUC/AP); the metrics average the evaluated tracks.",
    "retrieval": "skipped = test labels with no positive (or no negative) test track (no defined AUC/AP); "
                 "the metrics average the evaluated labels.",
}


# --------------------------------------------------------------------------------------------------------------------
# Published numbers


def load_paper_tables(path: Path | str = PAPER_TABLES_PATH) -> list[dict]:
    """Read the published numbers (reference/paper_tables.csv).

    Returns a list of rows in file order: {"table": int, "dataset", "model", "train", "test", "task", "metric": str,
    "value": float}.  Raises ValueError naming the file if a column is missing.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = {"table", "dataset", "model", "train", "test", "task", "metric", "value"}
        missing = expected - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {sorted(expected)}")
        rows = []
        for row in reader:
            rows.append({**{key: row[key] for key in expected - {"table", "value"}},
                         "table": int(row["table"]), "value": float(row["value"])})
    return rows


@dataclass(frozen=True)
class _Paper:
    """Published numbers indexed for lookup, and the paper's setup order."""

    values: dict                      # (dataset, model, train, test, task, metric) -> float
    datasets: tuple                   # datasets with published numbers
    trains: tuple                     # train setups in the paper's order
    tests: dict                       # table number -> tuple of test setups in the paper's order
    table4: tuple                     # ((train, test), ...) of Table 4

    @classmethod
    def load(cls, path: Path | str = PAPER_TABLES_PATH) -> "_Paper":
        rows = load_paper_tables(path)
        values = {(r["dataset"], r["model"], r["train"], r["test"], r["task"], r["metric"]): r["value"] for r in rows}
        tests: dict = {}
        for r in rows:
            tests.setdefault(r["table"], [])
            if r["test"] not in tests[r["table"]]:
                tests[r["table"]].append(r["test"])
        return cls(values=values,
                   datasets=tuple(dict.fromkeys(r["dataset"] for r in rows)),
                   trains=tuple(dict.fromkeys(r["train"] for r in rows if r["table"] == 2)),
                   tests={table: tuple(names) for table, names in tests.items()},
                   table4=tuple(dict.fromkeys((r["train"], r["test"]) for r in rows if r["table"] == 4)))

    def value(self, record: dict, metric: str):
        """Published value for this record's cell, or None (other dataset, setup, model or part)."""
        if record["part"] != "all":
            return None
        return self.values.get((record["dataset"], record["model"], record["train"], record["test"],
                                record["task"], metric))


# --------------------------------------------------------------------------------------------------------------------
# Records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normalize(record, index: int) -> dict:
    """Check one record and return a copy with "part" defaulted to "all" and metric values as floats (NaN for null).

    Raises ValueError naming the record's index for a non-dict, a missing identity key or a non-numeric metric.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record {index} is a {type(record).__name__}, expected a dict as in results.json")
    missing = [key for key in IDENTITY_KEYS if key not in record]
    if missing:
        raise ValueError(f"record {index} lacks {missing}; every record needs {list(IDENTITY_KEYS)} "
                         "(results.json written by evaluate.py has them)")
    out = dict(record)
    out["part"] = record.get("part", "all")
    for key in list(out):
        if METRIC_PATTERN.match(key):
            value = out[key]
            if value is None:
                out[key] = math.nan
            elif _is_number(value):
                out[key] = float(value)
            else:
                raise ValueError(f"record {index}: metric {key!r} must be a number or null, got {value!r}")
    return out


def _metric_names(records) -> list[str]:
    """Metric keys present in the records, in the paper's order (unknown P@K after, sorted by K)."""
    present = {key for record in records for key in record if METRIC_PATTERN.match(key)}
    known = [name for name in METRIC_ORDER if name in present]
    extra = sorted(present - set(known), key=lambda name: (name[:2], int(name[2:]) if name.startswith("P@") else 0))
    return known + extra


def _placement(record: dict, paper: _Paper) -> str:
    """Which table a record belongs to: "2", "3", "4", "gzsl" or "other"."""
    part, task, test, train = record["part"], record["task"], record["test"], record["train"]
    if part in GZSL_PARTS and task == "annotation":
        return "gzsl"
    if part != "all":
        return "other"
    if task == "annotation" and test in paper.tests.get(2, ()):
        return "2"
    if task == "retrieval" and test in paper.tests.get(3, ()):
        return "3"
    if task == "retrieval" and (train, test) in paper.table4:
        return "4"
    return "other"


def _order_key(values: list[str], known: tuple) -> dict:
    """Sort rank of each value: the paper's order first, then first appearance."""
    ranks = {name: i for i, name in enumerate(known)}
    for value in values:
        ranks.setdefault(value, len(ranks))
    return ranks


# --------------------------------------------------------------------------------------------------------------------
# Table model


@dataclass
class _Column:
    top: str          # group label (a metric name over its ours/paper/diff sub-columns), "" for single-level
    bottom: str       # column label
    numeric: bool     # right-aligned when True
    repeat_blank: bool = False   # plain text: blank a value equal to the row above (paper-style grouping)


@dataclass
class _Table:
    title: str
    columns: list[_Column]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _fmt(value) -> str:
    """4-decimal number; "n/a" for NaN (every row skipped); "-" for no value."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.4f}"


def _fmt_diff(ours, paper) -> str:
    if paper is None or ours is None or math.isnan(ours):
        return "-"
    return f"{ours - paper:+.4f}"


def _count(value) -> str:
    return "-" if value is None else str(value)


def _variant_columns(records) -> tuple[list[_Column], Callable]:
    """Columns that identify a variant (side information, model when several or not the embedding model, run)."""
    models = {r["model"] for r in records}
    show_model = models != {"embedding"}
    show_run = any("run" in r for r in records)
    columns = [_Column("", "Side info", False)]
    if show_model:
        columns.append(_Column("", "Model", False))
    if show_run:
        columns.append(_Column("", "Run", False))

    def cells(record):
        out = [str(record["side_info"])]
        if show_model:
            out.append(str(record["model"]))
        if show_run:
            out.append(str(record.get("run", "-")))
        return out

    return columns, cells


def _metric_table(title, records, metrics, paper: _Paper, with_paper: bool, setup_columns, notes) -> _Table:
    """A table of one row per record: setup columns, variant columns, metric columns (ours[, paper, diff]), counts.

    setup_columns: list of (label, record key) shown first, grouped (blank repeats) in plain text.
    """
    variant_columns, variant_cells = _variant_columns(records)
    columns = [_Column("", label, False, repeat_blank=True) for label, _ in setup_columns] + variant_columns
    for metric in metrics:
        if with_paper:
            columns += [_Column(metric, "ours", True), _Column(metric, "paper", True), _Column(metric, "diff", True)]
        else:
            columns.append(_Column("", metric, True))
    columns += [_Column("", "evaluated", True), _Column("", "skipped", True)]
    rows = []
    for record in records:
        row = [str(record[key]) for _, key in setup_columns] + variant_cells(record)
        for metric in metrics:
            ours = record.get(metric)
            row.append(_fmt(ours))
            if with_paper:
                published = paper.value(record, metric)
                row += [_fmt(published), _fmt_diff(ours, published)]
        row += [_count(record.get("evaluated")), _count(record.get("skipped"))]
        rows.append(row)
    return _Table(title, columns, rows, notes)


def _sorted_records(records, paper: _Paper, table: int | None) -> list[dict]:
    """Records in the paper's order: train setup, test setup, then first appearance (keeps variants together)."""
    trains = _order_key([r["train"] for r in records], paper.trains)
    tests = _order_key([r["test"] for r in records], paper.tests.get(table, ()))
    return sorted(records, key=lambda r: (trains[r["train"]], tests[r["test"]]))   # stable: first appearance


def _paper_note(table: int) -> str:
    return (f"paper = published value (Choi et al. 2019, Table {table}; FMA used instrument side information, MSD "
            f"GloVe), shown for every side information of ours; diff = ours - paper.")


def _gzsl_table(records, paper: _Paper) -> _Table:
    """Generalized zero-shot view: per (X+Y) setup and variant, seen part, unseen part and harmonic mean."""
    groups: dict = {}
    for record in _sorted_records(records, paper, 2):
        key = tuple(record.get(k) for k in ("train", "test", "side_info", "model", "run"))
        groups.setdefault(key, {})[record["part"]] = record
    metrics = _metric_names(records)
    first_records = [next(iter(parts.values())) for parts in groups.values()]
    variant_columns, variant_cells = _variant_columns(first_records)
    columns = [_Column("", "Train", False, True), _Column("", "Test", False, True)] + variant_columns
    for metric in metrics:
        columns += [_Column(metric, "seen", True), _Column(metric, "unseen", True), _Column(metric, "H", True)]
    columns += [_Column("", "evaluated s/u", True), _Column("", "skipped s/u", True)]
    rows = []
    for parts, first in zip(groups.values(), first_records):
        seen, unseen = parts.get("seen", {}), parts.get("unseen", {})
        row = [first["train"], first["test"]] + variant_cells(first)
        for metric in metrics:
            s, u = seen.get(metric), unseen.get(metric)
            if "harmonic" in parts and metric in parts["harmonic"]:
                h = parts["harmonic"][metric]
            else:
                h = harmonic_mean(s, u) if s is not None and u is not None else None
            row += [_fmt(s), _fmt(u), _fmt(h)]
        row += [f"{_count(seen.get('evaluated'))}/{_count(unseen.get('evaluated'))}",
                f"{_count(seen.get('skipped'))}/{_count(unseen.get('skipped'))}"]
        rows.append(row)
    notes = [
        "NOT IN THE PAPER. For the annotation tests over X+Y (seen + unseen labels): 'seen' ranks each track over "
        "the seen labels X only, 'unseen' over the unseen labels Y only, H = harmonic mean 2*seen*unseen/(seen+unseen) "
        "(the generalized zero-shot summary of Xian et al., 2018).",
        "skipped s/u = tracks skipped in the seen / unseen part (all labels of that part negative or positive); "
        "n/a = every track skipped in that part (C tracks have no seen label, so the seen part of C-(X+Y) is empty).",
    ]
    title = "Beyond the paper: generalized zero-shot view (seen labels X / unseen labels Y / harmonic mean H)"
    return _Table(title, columns, rows, notes)


def _other_table(records, paper: _Paper) -> _Table:
    """Records outside the paper's tables, so that none is dropped silently."""
    metrics = _metric_names(records)
    setup = [("Train", "train"), ("Test", "test"), ("Task", "task"), ("Part", "part")]
    notes = ["Records outside the paper's Tables 2-4 (for example test B-X of a run not trained on A-X, or Table 4 "
             "with one model only); published numbers, where any, are in the csv/json output."]
    return _metric_table("Other results (not in the paper's tables)", _sorted_records(records, paper, None),
                         metrics, paper, False, setup, notes)


def _dataset_blocks(dataset: str, records: list[dict], paper: _Paper) -> list:
    """Headings (str) and tables (_Table) for one dataset, in the paper's order."""
    with_paper = dataset in paper.datasets
    blocks: list = [("heading", f"Dataset: {dataset}")]
    if not with_paper:
        blocks.append(("text", f"No published numbers for dataset '{dataset}' (the paper reports "
                               f"{' and '.join(d.upper() for d in paper.datasets)} only): ours alone."))
    placed: dict = {}
    for record in records:
        placed.setdefault(_placement(record, paper), []).append(record)

    if "2" in placed:
        notes = [SKIPPED_NOTE["annotation"]] + ([_paper_note(2)] if with_paper else [])
        blocks.append(_metric_table(
            "Table 2. Zero-shot annotation (each test track ranks the test labels)",
            _sorted_records(placed["2"], paper, 2), [m for m in _metric_names(placed["2"]) if m.endswith("-i")
                                                      or m.startswith("P@")],
            paper, with_paper, [("Train", "train"), ("Test", "test")], notes))
    if "3" in placed:
        notes = [SKIPPED_NOTE["retrieval"]] + ([_paper_note(3)] if with_paper else [])
        blocks.append(_metric_table(
            "Table 3. Zero-shot retrieval (each test label ranks the test tracks)",
            _sorted_records(placed["3"], paper, 3), [m for m in _metric_names(placed["3"]) if m.endswith("-l")],
            paper, with_paper, [("Train", "train"), ("Test", "test")], notes))
    if "4" in placed and not {"embedding", "classification"} <= {r["model"] for r in placed["4"]}:
        # Table 4 compares two models; a lone model's records still show, under "Other results".
        models = {r["model"] for r in placed["4"]}
        pairs = ", ".join(f"{train} / {test}" for train, test in paper.table4)
        blocks.append(("text", f"Table 4 omitted: it needs retrieval records (train / test {pairs}) of both the "
                               f"embedding and the classification model; found only: {', '.join(sorted(models))} "
                               "(listed under 'Other results'). Evaluate a run of the missing model and merge the "
                               "runs (evaluate.py --collect)."))
        placed.setdefault("other", []).extend(placed.pop("4"))
    if "4" in placed:
        notes = [SKIPPED_NOTE["retrieval"] + " (The paper's Table 4 footnote excluded such labels.)"]
        if with_paper:
            notes.append(_paper_note(4))
        model_rank = {"embedding": 0, "classification": 1}
        rows = sorted(_sorted_records(placed["4"], paper, 4), key=lambda r: model_rank.get(r["model"], 2))
        blocks.append(_metric_table(
            "Table 4. Retrieval on seen labels: deep embedding model vs classification model",
            rows, ["AUC-l"], paper, with_paper, [("Train", "train"), ("Test", "test")], notes))
    if "gzsl" in placed:
        blocks.append(_gzsl_table(placed["gzsl"], paper))
    if "other" in placed:
        blocks.append(_other_table(placed["other"], paper))
    return blocks


# --------------------------------------------------------------------------------------------------------------------
# Renderers


def _blank_repeats(table: _Table) -> list[list[str]]:
    """Rows with paper-style grouping: a repeat_blank value equal to the row above (and all such columns to its left
    equal too) is left blank."""
    blank_columns = [i for i, column in enumerate(table.columns) if column.repeat_blank]
    out, previous = [], None
    for row in table.rows:
        shown = list(row)
        if previous is not None:
            for i in blank_columns:
                if row[i] != previous[i]:
                    break
                shown[i] = ""
        out.append(shown)
        previous = row
    return out


def _render_plain_table(table: _Table) -> str:
    """Aligned plain text; a two-line header when metric groups (ours/paper/diff, seen/unseen/H) exist."""
    rows = _blank_repeats(table)
    widths = [max([len(column.bottom)] + [len(row[i]) for row in rows]) for i, column in enumerate(table.columns)]
    # Widen the last column of a group when the group label is longer than the group.
    spans = []
    for i, column in enumerate(table.columns):
        if column.top and (i == 0 or table.columns[i - 1].top != column.top):
            spans.append([i, i])
        elif column.top:
            spans[-1][1] = i
    for start, end in spans:
        total = sum(widths[start:end + 1]) + (end - start)
        widths[end] += max(0, len(table.columns[start].top) - total)

    # Two spaces between columns, one inside a metric group (keeps the ours/paper/diff triplets together).
    seps = ["" if i == 0 else " " if column.top and column.top == table.columns[i - 1].top else "  "
            for i, column in enumerate(table.columns)]

    def line(cells):
        parts = [sep + (cell.rjust(w) if column.numeric else cell.ljust(w))
                 for sep, cell, w, column in zip(seps, cells, widths, table.columns)]
        return "".join(parts).rstrip()

    lines = [table.title]
    if spans:
        # The group label is centred over its whole span; other columns stay blank on this line.
        pieces, i = [], 0
        while i < len(table.columns):
            span = next((s for s in spans if s[0] == i), None)
            end = span[1] if span else i
            width = sum(widths[i:end + 1]) + (end - i)
            pieces.append(seps[i] + (table.columns[i].top.center(width) if span else " " * width))
            i = end + 1
        lines.append("".join(pieces).rstrip())
    lines.append(line([column.bottom for column in table.columns]))
    lines.append("".join(sep + "-" * w for sep, w in zip(seps, widths)))
    lines += [line(row) for row in rows]
    lines += [f"  note: {note}" for note in table.notes]
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _render_markdown_table(table: _Table) -> str:
    names = [f"{c.top} {c.bottom}" if c.top else c.bottom for c in table.columns]
    lines = [f"**{table.title}**", "",
             "| " + " | ".join(_markdown_cell(n) for n in names) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in table.rows]
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines)


def _render_blocks(blocks: list, fmt: str) -> str:
    out = []
    for block in blocks:
        if isinstance(block, _Table):
            out.append(_render_plain_table(block) if fmt == "table" else _render_markdown_table(block))
        elif block[0] == "heading":
            out.append(f"## {block[1]}" if fmt == "markdown" else f"===== {block[1]} =====")
        else:
            out.append(block[1])
    return "\n\n".join(out) + "\n"


def _long_rows(records: list[dict], paper: _Paper) -> list[dict]:
    """One row per (record, metric): identity, placement, our value, the published value and the difference."""
    rows = []
    for record in records:
        placement = _placement(record, paper)
        for metric in _metric_names([record]):
            value = record[metric]
            published = paper.value(record, metric)
            rows.append({
                "dataset": record["dataset"], "model": record["model"], "side_info": record["side_info"],
                "train": record["train"], "test": record["test"], "task": record["task"], "part": record["part"],
                "run": record.get("run"), "table": None if placement == "other" else placement, "metric": metric,
                "value": None if math.isnan(value) else value,
                "paper": published,
                # Rounded to 10 decimals: drops the float noise of the subtraction (0.0064, not 0.00639999...).
                "diff": None if published is None or math.isnan(value) else round(value - published, 10),
                "evaluated": record.get("evaluated"), "skipped": record.get("skipped"),
            })
    return rows


def _to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LONG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in LONG_FIELDS})
    return buffer.getvalue()


def render_tables(records, fmt: str = "table") -> str:
    """Render result records as the paper's tables.

    Parameters
    ----------
    records : iterable of dict
        Result records (results.json of one or several runs, merged: datasets, train setups, side information and
        models are told apart by their fields).
    fmt : {"table", "markdown", "csv", "json"}
        "table": aligned plain text, 4 decimals; "markdown": GitHub tables; "csv" / "json": one row per
        (record, metric) with columns LONG_FIELDS (paper and diff empty / null where nothing was published).

    Returns
    -------
    str, ending in a newline.  Raises ValueError for an unknown fmt or a malformed record.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = [_normalize(record, i) for i, record in enumerate(records)]
    paper = _Paper.load()
    if fmt == "csv":
        return _to_csv(_long_rows(records, paper))
    if fmt == "json":
        return json.dumps(_long_rows(records, paper), indent=2) + "\n"
    if not records:
        return "No results to show.\n"
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    blocks = []
    for dataset in datasets:
        blocks += _dataset_blocks(dataset, [r for r in records if r["dataset"] == dataset], paper)
    return _render_blocks(blocks, fmt)

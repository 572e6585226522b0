"""Tests of report.py (the results page, evaluate.py --collect ... --report) on hand-made runs.

The runs live in test_evaluate's tiny world: two side-information kinds x two seeds, each with the
files training and evaluation leave (config.json, a placeholder model.keras, results.json written
after it, scores/, log.csv, train_summary.json, label_map.png), so that --collect reuses them and
no model is loaded. The page is parsed with html.parser: figures and tables present, every number
of the tables equal to the runs' results.json and the aggregated record, nothing from outside.
"""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import (
    assert_clean_error,
    build_dataset,
    run_main,
    write_results,
    write_run,
    write_summary,
)

import aggregate
import config
import metrics
import protocol
import report
from fileio import OutputError, write_json

ANNOTATION = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10")
KINDS = ("x", "y")
SEEDS = (0, 1)
RETRIEVAL_TEST = "(B+C)-Y"
TRACKS = ["b1", "b2", "b3", "c1", "c2", "c3"]  # the setup's tracks with a mel (c4 has none)
# (B+C)-Y labels of the tiny world, as its annotations say: blues b1 b3 c1 c3, folk b2 b3 c2 c3
TRUTH = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1]], dtype=np.uint8)
# per (kind, seed): blues ranked perfectly (AUC 1) or by a constant (0.5); folk backwards (AUC 0)
BLUES = {0: [0.9, 0.1, 0.8, 0.7, 0.2, 0.6], 1: [0.5] * 6}
FOLK = [0.9, 0.1, 0.2, 0.8, 0.3, 0.1]


def annotation_values(kind: str, seed: int, part: str) -> dict:
    """Distinct made-up values per run and part (2 + 4 decimals, so that means are exact)."""
    base = 0.5 + 0.1 * KINDS.index(kind) + 0.01 * seed + 0.001 * ("all seen unseen".find(part) + 1)
    return {m: round(base - 0.03 * i, 6) for i, m in enumerate(ANNOTATION)}


def record(kind, test, task, part="all", **values):
    return {
        "dataset": "tiny",
        "model": "embedding",
        "side_info": kind,
        "train": "A-X",
        "test": test,
        "task": task,
        "part": part,
        **values,
    }


def make_run(root: Path, data: Path, kind: str, seed: int) -> Path:
    run_dir = write_run(root / kind / f"seed{seed}", data)
    meta = json.loads((run_dir / config.CONFIG_FILE).read_text())
    meta["config"].update(seed=seed, side_info=kind)
    meta["versions"] = {"keras_backend": "jax", "keras": "3.0.0"}
    meta["environment"] = {"lock": "requirements-lock.txt", "matches": False, "differences": ["x"]}
    write_json(run_dir / config.CONFIG_FILE, meta)
    scores = np.stack([BLUES[seed], FOLK], axis=1).astype(np.float32)  # (6 tracks, 2 labels)
    protocol.save_scores(run_dir, RETRIEVAL_TEST, scores, TRUTH, TRACKS, ["blues", "folk"])
    retrieval = metrics.retrieval_metrics(scores, TRUTH)
    records = [
        record(kind, "B-Y", "annotation", **annotation_values(kind, seed, "all")),
        record(kind, RETRIEVAL_TEST, "retrieval", **retrieval),
    ]
    for part in ("all", "seen", "unseen"):
        records.append(
            record(kind, "B-(X+Y)", "annotation", part, **annotation_values(kind, seed, part))
        )
    seen, unseen = records[-2], records[-1]
    records.append(
        record(
            kind,
            "B-(X+Y)",
            "annotation",
            "harmonic",
            **{m: metrics.harmonic_mean(seen[m], unseen[m]) for m in ANNOTATION},
        )
    )
    (run_dir / config.LOG_FILE).write_text(
        "epoch,loss,val_loss\n0,3.0,2.5\n1,2.0,2.2\n2,1.5,2.4\n", encoding="utf-8"
    )
    summary = json.loads(write_summary(run_dir).read_text())  # finished, bound to config.json
    write_json(run_dir / config.SUMMARY_FILE, {**summary, "epochs_completed": 3, "model_epoch": 1})
    write_results(run_dir, [{**r, "evaluated": 3, "skipped": 0} for r in records])
    (run_dir / protocol.LABEL_MAP_FILE).write_bytes(f"png of {kind}{seed}".encode())
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("report")
    data = build_dataset(root)
    return [make_run(root / "runs", data, kind, seed) for kind in KINDS for seed in SEEDS]


class Page(HTMLParser):
    """Tags, attributes, headings, image sources and tables (rows of cell texts, row/colspans
    expanded) of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags = []
        self.attributes = []
        self.headings = []
        self.images = []
        self.tables = []
        self.open = None  # [tag, text] of the heading or cell being read
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.attributes += [(tag, key, value) for key, value in attrs.items()]
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table":
            self.tables.append({"head": [], "body": []})
        if tag == "tr":
            self.tables[-1]["head" if self.in_head else "body"].append([])
        if tag == "thead":
            self.in_head = True
        if tag == "tbody":
            self.in_head = False
        if tag in ("td", "th", "h3", "h4"):
            self.open = [tag, "", int(attrs.get("rowspan", 1)), int(attrs.get("colspan", 1))]

    def handle_data(self, data):
        if self.open:
            self.open[1] += data

    def handle_endtag(self, tag):
        if self.open and tag == self.open[0]:
            if tag in ("h3", "h4"):
                self.headings.append(self.open[1].strip())
            else:
                part = "head" if self.in_head else "body"
                self.tables[-1][part][-1].append((self.open[1].strip(), *self.open[2:]))
            self.open = None


def expand(rows):
    """Rows of (text, rowspan, colspan) cells as rows of texts, spans repeated."""
    out = []
    carried = {}  # column -> [rows left, text]
    for row in rows:
        full = []
        cells = iter(row)
        while True:
            if carried.get(len(full), [0])[0] > 0:
                carried[len(full)][0] -= 1
                full.append(carried[len(full)][1])
                continue
            cell = next(cells, None)
            if cell is None:
                break
            text, rowspan, colspan = cell
            if rowspan > 1:
                carried[len(full)] = [rowspan - 1, text]
            full += [text] * colspan
        out.append(full)
    return out


def table_cells(table) -> dict:
    """{(row labels..., column labels...): text} of a pandas to_html table."""
    head = expand(table["head"])
    index_names = [name for name in head[-1] if name]
    columns = list(zip(*head[:-1], strict=True))  # the labels above each column
    return {
        (*row[: len(index_names)], *filter(None, columns[i])): text
        for row in expand(table["body"])
        for i, text in enumerate(row)
        if i >= len(index_names)
    }


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "report.html"
    argv = ["--collect", *map(str, runs), "--report", str(path), "--format", "json"]
    code = report_main(argv)
    assert code == 0
    return path, path.read_text(encoding="utf-8")


def report_main(argv):
    import evaluate

    return evaluate.main([*argv, "--no-progress"])


def test_the_page_is_one_file_with_every_section(runs, page):
    path, text = page
    parsed = Page(text)
    # nothing loaded from outside: images inline, no script, no link, no src/href elsewhere
    assert not {"script", "link", "iframe", "object"} & set(parsed.tags)
    refs = [(tag, key, value) for tag, key, value in parsed.attributes if key in ("src", "href")]
    assert refs and all(value.startswith("data:image/png;base64,") for _, _, value in refs)
    assert "url(" not in text and "@import" not in text
    for title in ("Table 2.", "Table 3.", "Beyond the paper"):  # forest plot, then the table
        assert sum(h.startswith(title) for h in parsed.headings) == 2
    # 3 forest plots, the per-label AUC, the training curves, a label map per run
    assert len(parsed.images) == 3 + 1 + 1 + len(runs)
    for run in runs:
        label_map = base64.b64encode((run / protocol.LABEL_MAP_FILE).read_bytes()).decode()
        assert f"data:image/png;base64,{label_map}" in parsed.images
    assert "95% confidence interval" in text and "95% prediction interval" in text
    assert "Runs without scores/ (left out): none." in text
    # what was run: the settings every run shares and one row per run with what differs
    assert "<b>keras_backend</b> jax" in text
    assert "<b>versions match requirements-lock.txt</b> x" in text
    per_run = table_cells(parsed.tables[0])
    assert {key[0] for key in per_run} == {f"{k}/seed{s}" for k in KINDS for s in SEEDS}
    assert per_run["y/seed1", "seed"] == "1" and per_run["y/seed1", "side_info"] == "y"


def test_every_number_in_the_tables_is_the_runs_mean_and_the_records_interval(runs, page):
    _, text = page
    records, _ = aggregate.collect(runs, aggregated=True)
    results = {run: json.loads((run / protocol.RESULTS_FILE).read_text()) for run in runs}
    parsed = Page(text)
    shown = {}
    for table in parsed.tables[1:]:
        shown.update(table_cells(table))
    checked = 0
    for agg in records:
        for metric, mean in agg["mean"].items():
            values = [
                r[metric]
                for run in map(Path, agg["runs"])
                for r in results[run]
                if (r["test"], r["task"], r["part"], r["side_info"])
                == (agg["test"], agg["task"], agg["part"], agg["side_info"])
            ]
            assert mean == pytest.approx(np.mean(values), abs=1e-12) and len(values) == 2
            low, high = agg["ci95"][metric]
            # the half-width of the side not clipped to [0, 1]
            half = max(np.mean(values) - low, high - np.mean(values))
            expected = f"{np.mean(values):.4f} ± {half:.4f}"
            row = ("A-X", agg["test"], agg["side_info"])
            if agg["part"] != "all":  # the GZSL table: a metric's seen / unseen / H columns
                column = (
                    metric,
                    {"seen": "seen", "unseen": "unseen", "harmonic": "H"}[agg["part"]],
                )
                assert shown[(*row, *column)] == expected
            else:
                assert shown[(*row, metric)] == expected
            assert shown[(*row, "n")] == "2"
            checked += 1
    # B-Y and B-(X+Y): 5 metrics each; retrieval 2; GZSL 3 parts x 5; per kind
    assert checked == 2 * (5 + 5 + 2 + 15)
    # and nothing else is a number with an interval
    intervals = [t for t in shown.values() if "±" in t]
    assert len(intervals) == checked


def test_per_label_auc_of_the_unseen_labels(runs):
    records, _ = aggregate.collect(runs, aggregated=True)
    values = report.per_label_auc(records)
    # blues: AUC 1 (seed 0, ranked perfectly) and 0.5 (seed 1, all scores equal); folk: AUC 0
    assert values == {
        ("tiny", kind, RETRIEVAL_TEST): {"blues": [1.0, 0.5], "folk": [0.0, 0.0]} for kind in KINDS
    }
    # each run's mean over its labels is its AUC-l: (1 + 0) / 2 and (0.5 + 0) / 2, mean 0.375
    assert [r["mean"]["AUC-l"] for r in records if r["task"] == "retrieval"] == [0.375, 0.375]


def test_prediction_intervals_are_drawn_when_a_record_has_them(runs):
    records, notes = aggregate.collect(runs, aggregated=True)
    without = [{k: v for k, v in r.items() if k != "pi95"} for r in records]
    wide = [
        {**r, "pi95": {m: [max(0.0, v - 0.2), min(1.0, v + 0.2)] for m, v in r["mean"].items()}}
        for r in without
    ]
    forest = lambda page: Page(page).images[:3]  # noqa: E731
    plain = forest(report.build_page(without, notes))
    drawn = forest(report.build_page(wide, notes))
    assert all(a != b for a, b in zip(plain, drawn, strict=True))


def test_report_path_is_checked_before_anything_runs(runs, tmp_path, capsys):
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my notes</html>", encoding="utf-8")
    (tmp_path / "folder.html").mkdir()
    for argv, message in (
        (
            ["--run-dir", str(runs[0]), "--report", str(tmp_path / "a.html")],
            "--report needs --collect",
        ),
        (
            ["--collect", str(runs[0]), "--per-run", "--report", str(tmp_path / "a.html")],
            "no --per-run",
        ),
        (["--collect", str(runs[0]), "--report", str(tmp_path / "a.txt")], "must end with .html"),
        (["--collect", str(runs[0]), "--report", str(mine)], "exists and is not a results page"),
        (
            ["--collect", str(runs[0]), "--report", str(tmp_path / "folder.html")],
            "is not a results",
        ),
    ):
        code, _, err = run_main(argv, capsys)
        assert_clean_error(code, err, message)
    assert mine.read_text(encoding="utf-8") == "<html>my notes</html>"
    with pytest.raises(OutputError):
        report.check_path(mine)


def test_a_page_of_ours_is_replaced(runs, page, tmp_path):
    path, _ = page
    copy = tmp_path / "again.html"
    copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert report.check_path(copy) == copy.resolve()
    records, notes = aggregate.collect(runs[:2], aggregated=True)
    report.write_report(copy, records, notes)
    assert "results of 2 runs" in copy.read_text(encoding="utf-8")

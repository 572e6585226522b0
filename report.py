"""One results page per reproduction: a single, self-contained HTML file (figures as base64 PNG,
styles inline, no script, nothing fetched) that evaluate.py --collect RUN... --report FILE.html and
reproduce.py (OUT/report.html) write from the aggregated records (aggregate.py).

Top to bottom: 1. what was run (each run's config.json and train_summary.json: the settings all runs
share, then what differs between them); 2. a forest plot per table of tables.py (a panel per
metric, a row per setup, side-information kinds side by side: our mean, the 95% confidence interval
of the mean, the 95% prediction interval of one run, the paper's number, each kind's band shaded by
the table's verdict); 3. the tables themselves, split into blocks of whole metric groups as the
terminal prints them; 4. the retrieval AUC of each unseen label (Table 3's setups, from each run's
scores/<setup>.npz); 5. the training curves of every run (log.csv) and the label maps
(label_map.png)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

import config
import metrics
import splits
import tables
from aggregate import scores_by_test
from fileio import OutputError, atomic_write_text
from protocol import LABEL_MAP_FILE, read_config, read_json_object

# marks a page of ours: the only existing file write_report replaces
GENERATOR = '<meta name="generator" content="zsl-music report">'
VERDICT_COLOURS = {"inside": "#c8e6c9", "above": "#ffcdd2", "below": "#bbdefb"}
CAPTION = (
    "One panel per metric, one row per setup, the side-information kinds side by side in each "
    "row. Dot: our mean over the seeds; the thick bar is the 95% confidence interval of that mean "
    "(where the mean of many more seeds would lie), the thin bar the 95% prediction interval of "
    "one new run (where a single run, like the paper's, would land). White diamond: the paper's "
    "number; the band behind a kind is coloured by the table's 'paper is' verdict: green inside, "
    "red above (the paper reports more), blue below; no band, no verdict."
)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; }
h2 { border-bottom: 2px solid #444; margin-top: 2em; } h4 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .6em 0; font: 12px/1.3 ui-monospace, monospace; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
thead th { background: #f2f2f2; } tbody th { text-align: left; }
img { max-width: 100%; } .note, figcaption { color: #444; font-size: 13px; max-width: 110ch; }
.facts { columns: 3; font-size: 13px; } .facts li { break-inside: avoid; }
.grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1em; }
"""


def check_path(path) -> Path:
    """The page's path, resolved: an .html file that does not exist yet or is a page of ours (this
    module never overwrites another file)."""
    path = Path(path).expanduser().resolve()
    if path.suffix != ".html" or (
        path.exists() and not (path.is_file() and GENERATOR in path.read_text(errors="replace"))
    ):
        raise OutputError(
            f"report {path}: "
            + (
                "must end with .html."
                if path.suffix != ".html"
                else "exists and is not a results "
                "page of this project; remove it or choose another path."
            )
        )
    return path


def write_report(path, records: list[dict], notes: list[str]) -> Path:
    """Write the page of aggregated records (aggregate.collect(..., aggregated=True); the runs each
    record names are read for the rest) and the collection's notes; returns its path."""
    return atomic_write_text(check_path(path), build_page(records, notes))


def build_page(records: list[dict], notes: list[str]) -> str:
    """The page's HTML (see the module's docstring)."""
    found = tables.layout(records)
    runs = list(dict.fromkeys(Path(run) for r in records for run in r.get("runs", ())))
    root = Path(os.path.commonpath(runs)) if len(runs) > 1 else Path(*runs[:1]).parent
    names = {str(run.relative_to(root)): run for run in runs}  # run directories by short name
    paper = tables.paper_index()
    per_label = per_label_auc(records)
    logs = {name: run for name, run in names.items() if (run / config.LOG_FILE).is_file()}
    body = [
        f"<h1>Zero-shot music tagging: results of {len(runs)} runs</h1>",
        "<h2>1. What was run</h2>",
        _what_was_run(names),
        "<h2>2. Where our runs land against the paper</h2>",
        *(
            f"<h3>Dataset {html.escape(dataset)}</h3>"
            + "".join(
                f"<p>{html.escape(b)}</p>"
                if isinstance(b, str)
                else f"<h4>{html.escape(b['title'])}</h4><figure>{_forest(b, paper)}"
                f"<figcaption>{CAPTION}</figcaption></figure>"
                for b in blocks
                if isinstance(b, str) or b["table"] != "other"
            )
            for dataset, blocks in found.items()
        ),
        "<h2>3. The numbers</h2>",
        *(
            f"<h3>Dataset {html.escape(dataset)}</h3>" + _tables(blocks)
            for dataset, blocks in found.items()
        ),
        "<h2>4. Which unseen labels work</h2><p class=note>Retrieval AUC of each unseen label "
        "(zero-shot retrieval, Table 3's setups): bar = mean over the runs in which the label was "
        "unseen (their number in brackets), whisker = their standard deviation; dashed line = "
        "chance (0.5). Runs "
        "without scores/ (left out): "
        + html.escape(", ".join(n for n, run in names.items() if not scores_by_test(run)) or "none")
        + ".</p>",
        _per_label_figure(per_label) if per_label else "<p>No retrieval scores to show.</p>",
        "<h2>5. Training</h2><p class=note>Loss and val_loss per epoch (log.csv); dashed line: "
        "the epoch model.keras holds (train_summary.json).</p>",
        _curves(logs) if logs else "<p>No run has a log.csv.</p>",
        "<h3>Label maps</h3><div class=grid>"
        + "".join(
            f"<figure><img alt='' src='data:image/png;base64,"
            f"{base64.b64encode((run / LABEL_MAP_FILE).read_bytes()).decode()}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, run in names.items()
            if (run / LABEL_MAP_FILE).is_file()
        )
        + "</div><details><summary>Notes of the evaluation</summary><ul>"
        + "".join(f"<li>{html.escape(note)}</li>" for note in notes)
        + "</ul></details>",
    ]
    return (
        f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>{GENERATOR}"
        f"<title>zsl-music results</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# The settings all runs share (a list), then one row per run with what differs (a table).
def _what_was_run(names: dict[str, Path]) -> str:
    facts = pd.DataFrame(
        {name: _facts(run) for name, run in names.items() if (run / config.CONFIG_FILE).is_file()}
    )
    if facts.empty:
        return "<p>No training run among them (external models only).</p>"
    same = facts.T.astype(str).nunique() <= 1
    return (
        "<h4>The same in every run</h4><ul class=facts>"
        + "".join(
            f"<li><b>{html.escape(k)}</b> {html.escape(str(v))}</li>"
            for k, v in facts.loc[same].iloc[:, 0].items()
        )
        + "</ul><h4>Per run</h4>"
        + facts.loc[~same].T.rename_axis("run").to_html(border=0)
    )


# What config.json and train_summary.json say about a run, flat.
def _facts(run: Path) -> dict:
    meta = read_config(run)
    summary = _read_json(run / config.SUMMARY_FILE)
    environment = meta.get("environment", {})
    return {
        "dataset": meta.get("dataset"),
        "dataset folder": meta["dataset_dir"],
        **{k: v for k, v in meta["config"].items() if k not in ("dataset", "split", "run_dir")},
        "split file": Path(meta["split_path"]).name,
        "epochs run": summary.get("epochs_completed", "unfinished"),
        "model.keras from epoch": summary["model_epoch"] + 1
        if "model_epoch" in summary
        else "unfinished",
        **{f"sha256 {k}": str(v)[:16] for k, v in meta["checksums"].items() if k != "mels"},
        "mel store": ", ".join(f"{k} {v:.6g}" for k, v in meta["checksums"]["mels"].items()),
        **meta.get("versions", {}),
        f"versions match {environment.get('lock', 'the lock file')}": "yes"
        if environment.get("matches")
        else "; ".join(environment.get("differences", ["not recorded"])),
    }


# The tables of one dataset as the terminal shows them (tables.split_columns), with their notes.
def _tables(blocks: list) -> str:
    return "".join(
        f"<p>{html.escape(b)}</p>"
        if isinstance(b, str)
        else f"<h4>{html.escape(b['title'])}</h4>"
        + "".join(part.to_html(border=0) for part in tables.split_columns(b["frame"]))
        + "".join(f"<p class=note>{html.escape(note)}</p>" for note in b["notes"])
        for b in blocks
    )


# Who a record is within a row: side information, model (unless embedding), variant.
def _series(r: dict) -> str:
    return " ".join(
        filter(None, (r["side_info"], r["model"].replace("embedding", ""), r.get("variant")))
    )


def _row(r: dict) -> str:
    return f"{r['train']}  {r['test']}  {'' if r['part'] == 'all' else r['part']}"


# A table's records as a forest plot (CAPTION); setups whose values are all n/a are left out.
def _forest(block: dict, paper: dict) -> str:
    from matplotlib.lines import Line2D

    names = [
        m
        for m in dict.fromkeys(block["frame"].columns.get_level_values(0))
        if tables.METRIC_PATTERN.match(m)
    ]
    points = [
        (record, cell)
        for record in tables._sorted(block["records"], block["table"])
        for cell in tables._long_rows(record, paper)
        if cell["metric"] in names and cell["value"] is not None
    ]
    rows = list(dict.fromkeys(_row(record) for record, _ in points))
    series = list(dict.fromkeys(_series(record) for record, _ in points))
    band = 0.8 / len(series)  # each kind's share of a row
    height = 0.6 + 0.22 * len(rows) * (len(series) + 1)
    axes = _subplots(1, len(names), (1.5 + 2.6 * len(names), height), sharey=True)[0]
    for record, cell in points:
        ax = axes[names.index(cell["metric"])]
        kind = series.index(_series(record))
        y = rows.index(_row(record)) + (kind + 0.5) * band - 0.4
        ax.axhspan(y - band / 2, y + band / 2, color=VERDICT_COLOURS.get(cell["verdict"], "none"))
        for key, width in (("pi95", 1), ("ci95", 5)):
            interval = (record.get(key) or {}).get(cell["metric"]) or []
            ax.plot(interval, [y] * len(interval), color=f"C{kind}", lw=width, alpha=0.7)
        ax.plot([cell["value"]], [y], "o", color=f"C{kind}", ms=4)
        ax.plot([cell["paper"]], [rows.index(_row(record))], "D", mfc="white", mec="black")
        ax.set_title(cell["metric"])
        ax.grid(axis="x", alpha=0.3)
    for ax in axes:  # the metrics' range: an interval that leaves it runs to the edge
        ax.set_xlim(max(0, ax.get_xlim()[0]), min(1, ax.get_xlim()[1]))
    axes[0].set(yticks=range(len(rows)), yticklabels=rows, ylim=(len(rows) - 0.5, -0.5))
    handles = [Line2D([], [], color=f"C{i}", marker="o", label=s) for i, s in enumerate(series)] + [
        Line2D([], [], color="grey", lw=5, alpha=0.7, label="95% confidence interval of our mean"),
        Line2D([], [], color="grey", lw=1, label="95% prediction interval of one run"),
    ]
    axes[0].figure.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1), ncol=4, frameon=False
    )
    return _png(axes)


def per_label_auc(records: list[dict]) -> dict:
    """Retrieval AUC of each unseen label in Table 3's setups, from the scores/<setup>.npz of the
    runs each aggregated record names (metrics.per_label_metrics): {(dataset, _series, test):
    {label: [its AUC in each run where it was a test label with a defined AUC]}}; runs without a
    scores file are left out."""
    values = {}
    zero_shot = {("retrieval", "all", test) for test in splits.RETRIEVAL_TESTS}
    for record in (r for r in records if (r["task"], r["part"], r["test"]) in zero_shot):
        per_label = values.setdefault((record["dataset"], _series(record), record["test"]), {})
        for path in filter(
            None, (scores_by_test(Path(r)).get(record["test"]) for r in record["runs"])
        ):
            with np.load(path, allow_pickle=False) as npz:
                auc = metrics.per_label_metrics(npz["scores"], npz["labels"])["AUC-l"]  # (m,)
                names = npz["label_names"].tolist()
            for name, value in zip(names, auc, strict=True):
                per_label.setdefault(name, []).extend([] if np.isnan(value) else [float(value)])
    return {key: per_label for key, per_label in values.items() if per_label}


# A panel per (dataset, kind) x retrieval setup: the labels sorted by their mean AUC over the runs
# (bar), with its standard deviation over them (whisker).
def _per_label_figure(values: dict) -> str:
    whos = list(dict.fromkeys(key[:2] for key in values))
    tests = list(dict.fromkeys(key[2] for key in values))
    height = (1 + 0.2 * max(map(len, values.values()))) * len(whos)
    axes = _subplots(len(whos), len(tests), (6 * len(tests), height))
    for (dataset, who, test), per_label in values.items():
        ax = axes[whos.index((dataset, who)), tests.index(test)]
        order = sorted(per_label, key=lambda lab: np.mean(per_label[lab]))
        ax.barh(
            [f"{lab} ({len(per_label[lab])})" for lab in order],
            [np.mean(per_label[lab]) for lab in order],
            xerr=[np.std(per_label[lab]) for lab in order],
            color="#9ecae1",
        )
        ax.axvline(0.5, color="grey", ls="--", lw=1)
        ax.set(xlim=(0, 1), title=f"{dataset}, {who}: retrieval {test}", xlabel="AUC of the label")
    return _png(axes)


# Small multiples: loss and val_loss of every run with a log.csv, the epoch of model.keras marked
# (train_summary.json; none while a run is unfinished).
def _curves(logs: dict[str, Path]) -> str:
    columns = min(4, len(logs))
    rows = -(-len(logs) // columns)
    axes = _subplots(rows, columns, (3.4 * columns, 2.4 * rows))
    for ax, (name, run) in zip(axes.flat, logs.items(), strict=False):
        log = pd.read_csv(run / config.LOG_FILE)
        ax.plot(log["epoch"] + 1, log[["loss", "val_loss"]], label=["loss", "val_loss"])
        kept = _read_json(run / config.SUMMARY_FILE).get("model_epoch", -2) + 1  # -1: unfinished
        ax.axvline(kept, color="black", ls="--", label="model.keras")
        ax.set(title=name, xlabel="epoch", xlim=(0.5, len(log) + 0.5))
    for ax in axes.flat[len(logs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _png(axes)


def _subplots(rows: int, columns: int, size: tuple, **shared):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing to close

    return Figure(figsize=size, layout="constrained").subplots(
        rows, columns, squeeze=False, **shared
    )


def _png(axes) -> str:
    buffer = io.BytesIO()
    np.ravel(axes)[0].figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return (
        f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
    )


def _read_json(path: Path) -> dict:  # a damaged file: one EvaluationError naming it
    return read_json_object(path) if path.is_file() else {}

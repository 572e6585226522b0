"""The result records (results.json, protocol.py) in the layout of the paper's Tables 2-4 (Choi et
al., ISMIR 2019), with the published numbers (reference/paper_tables.csv) and ours - paper for FMA
and MSD, plus a clearly labelled generalized zero-shot view; a record outside the paper's tables
goes to "Other results", never dropped. Aggregated records (aggregate.py: several seeds) show "mean
± half-width" of the 95% confidence interval of our mean, n, and for FMA/MSD where the published
number (one run) lies against the 95% prediction interval of one new run; rows of other models
(evaluate.py --external) come under ours. Table 4 shows, for a learning-rate grid, each model at the
original's lr and at the lr chosen on validation. render_comparison prints evaluate.py --compare."""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import pandas as pd

import splits
from config import TrainConfig
from metrics import harmonic_mean

PAPER_TABLES_PATH = Path(__file__).resolve().parent / "reference" / "paper_tables.csv"
FORMATS = ("table", "markdown", "csv", "json")
MAX_WIDTH = 160  # characters of a printed table (format "table")
GZSL_PARTS = ("seen", "unseen", "harmonic")
IDENTITY_KEYS = ("dataset", "model", "side_info", "train", "test", "task")
PAPER_KEYS = ("dataset", "model", "train", "test", "task", "metric")  # a published cell
METRIC_ORDER = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10", "AUC-l", "MAP-l")
METRIC_PATTERN = re.compile(r"^(AUC-[il]|MAP-[il]|P@\d+)$")
# a row's identity
ROW_KEYS = ("dataset", "model", "side_info", "train", "test", "task", "part", "variant", "run")
LONG_FIELDS = (
    *ROW_KEYS,
    "table",
    "metric",
    "value",
    "paper",
    "diff",
    "verdict",
    "n_runs",
    "std",
    "ci95_low",
    "ci95_high",
    "evaluated",
    "skipped",
    "pi95_low",
    "pi95_high",
)
COUNTS = ("evaluated", "skipped")
COMPARISON_FIELDS = (
    "dataset",
    "test",
    "task",
    "metric",
    "a",
    "b",
    "diff",
    "ci95_low",
    "ci95_high",
    "rows",
    "left_out",
    "resamples",
    "seed",
    "run_a",
    "run_b",
)  # csv of render_comparison
SEED_COMPARISON_FIELDS = (
    "train",
    "test",
    "task",
    "part",
    "metric",
    "n_pairs",
    "mean_diff",
    "ci95_low",
    "ci95_high",
    "p_sign_flip",
)  # csv of render_comparison across seeds
OUR_MODELS = ("embedding", "classification")  # other model names: external models, shown under ours
TABLE_TESTS = {
    "2": splits.ANNOTATION_TESTS,
    "3": splits.RETRIEVAL_TESTS,
    "4": (splits.TABLE4_TEST,),
    "gzsl": splits.ANNOTATION_TESTS,
}
# evaluate.py tests B-X only after A-X training (B's tracks train the other setups)
TABLE4_TRAIN = "A-X"
TITLES = {
    "2": "Table 2. Zero-shot annotation (each test track ranks the test labels)",
    "3": "Table 3. Zero-shot retrieval (each test label ranks the test tracks)",
    "4": "Table 4. Retrieval on seen labels: deep embedding model vs classification model",
    "gzsl": "Beyond the paper: generalized zero-shot view (seen labels X / unseen labels Y / "
    "harmonic mean H)",
    "other": "Other results (not in the paper's tables)",
}
_SKIPPED = "skipped = test {} (no defined AUC/AP); the metrics average the evaluated {}."
NOTES = {
    "2": [_SKIPPED.format("tracks whose labels are all negative or all positive", "tracks")],
    "3": [_SKIPPED.format("labels with no positive (or no negative) test track", "labels")],
    "4": [
        _SKIPPED.format("labels with no positive (or no negative) test track", "labels")
        + " (The paper's "
        "Table 4 footnote excluded such labels.)"
    ],
    "gzsl": [
        "NOT IN THE PAPER. Annotation tests over X+Y (seen + unseen labels): 'seen' ranks each "
        "track over "
        "the seen labels X only, 'unseen' over the unseen labels Y only; H = "
        "2*seen*unseen/(seen+unseen), "
        "the generalized zero-shot summary of Xian et al. (2018).",
        "skipped s/u = tracks skipped in the seen / unseen part; n/a = all skipped (C has no seen "
        "label).",
    ],
    "other": [
        "Records outside the paper's Tables 2-4 (e.g. test B-X of a run not trained on A-X, or "
        "Table 4 with "
        "one model); published numbers, where any, are in the csv/json output."
    ],
}
PAPER_NOTE = (
    "paper = published value (Choi et al. 2019, Table {}; FMA used instrument side information, "
    "MSD GloVe), "
    "shown for every side information of ours; diff = ours - paper."
)
AGGREGATE_NOTE = (
    "ours = mean ± half-width of the 95% confidence interval of our mean over the n runs that "
    "differ only in their seeds (mean ± t(0.975, n-1) * std / sqrt(n), clipped to [0, 1]): where "
    "the mean over many more seeds would lie; n = 1: the run's value, no interval."
)
VERDICT_NOTE = (
    "paper is = where the published number, one training run, lies against our 95% prediction "
    "interval of one new run (mean ± t(0.975, n-1) * std * sqrt(1 + 1/n), clipped to [0, 1]; "
    "pi95 in csv/json): 'inside' it, 'above' or 'below' it; '-' without one (n = 1)."
)
MULTIPLE_NOTE = (
    "{} comparisons (setups x metrics) in this table: where A and B do not differ, about {:.1f} of "
    "them are expected to look significant at the 5% level by chance; for all of them at once "
    "(Bonferroni) read each at p < {:.4f}."
)


def render_tables(records, fmt: str = "table") -> str:
    """Records (of one or several runs, or aggregated by aggregate.py) as "table", "markdown", "csv"
    (a row per record and metric) or "json" (the same rows; an aggregated record stays one object,
    plus paper/diff/verdict)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = [_normalize(record, i) for i, record in enumerate(records)]
    paper = paper_index()
    # aggregated records as aggregate.py writes them (+ published numbers); others one per metric
    if fmt == "json":
        return (
            json.dumps(
                [
                    row
                    for r in records
                    for row in ([_json_record(r, paper)] if "n_runs" in r else _long_rows(r, paper))
                ],
                indent=2,
            )
            + "\n"
        )
    if fmt == "csv":
        return pd.DataFrame(
            [row for record in records for row in _long_rows(record, paper)],
            columns=LONG_FIELDS,
            dtype=object,
        ).to_csv(index=False, lineterminator="\n")
    if not records:
        return "No results to show.\n"
    return (
        "\n\n".join(
            block
            for dataset, found in layout(records).items()
            for block in [
                f"## Dataset: {dataset}"
                if fmt == "markdown"
                else f"===== Dataset: {dataset} =====",
                *(
                    b if isinstance(b, str) else _render(b["title"], b["frame"], b["notes"], fmt)
                    for b in found
                ),
            ]
        )
        + "\n"
    )


def layout(records) -> dict[str, list]:
    """{dataset: its tables (dataset_tables)} of records as results.json or aggregate.py holds them,
    checked and normalized; datasets in the order they first appear."""
    records = [_normalize(record, i) for i, record in enumerate(records)]
    paper = paper_index()
    return {
        d: dataset_tables(d, [r for r in records if r["dataset"] == d], paper)
        for d in dict.fromkeys(r["dataset"] for r in records)
    }


def paper_index() -> dict[tuple, float]:
    """The published numbers by PAPER_KEYS (dataset, model, train, test, task, metric)."""
    return {tuple(row[k] for k in PAPER_KEYS): row["value"] for row in load_paper_tables()}


def load_paper_tables(path: Path | str = PAPER_TABLES_PATH) -> list[dict]:
    """The published numbers: [{"table": int, "dataset", "model", "train", "test", "task", "metric",
    "value"}]."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = ["table", *PAPER_KEYS, "value"]
    if missing := sorted(set(expected) - set(frame.columns)):
        raise ValueError(f"{path}: missing column(s) {missing}; expected {expected}")
    return frame[expected].astype({"table": int, "value": float}).to_dict("records")


def _normalize(record, index: int) -> dict:
    """A checked copy of a record: part defaulted to "all", metrics as floats (NaN for null)."""
    if not isinstance(record, dict) or (
        missing := [key for key in IDENTITY_KEYS if key not in record]
    ):
        problem = (
            f"is a {type(record).__name__}" if not isinstance(record, dict) else f"lacks {missing}"
        )
        raise ValueError(
            f"record {index} {problem}; a record is a dict with {list(IDENTITY_KEYS)}, as in "
            "results.json"
        )
    out = {**record, "part": record.get("part", "all")}
    if "mean" in record:  # an aggregated record (aggregate.py): its means are the values shown
        out.update(_check_aggregate(record, index))
    for key in filter(METRIC_PATTERN.match, out):
        if out[key] is not None and (
            isinstance(out[key], bool) or not isinstance(out[key], (int, float))
        ):
            raise ValueError(
                f"record {index}: metric {key!r} must be a number or null, got {out[key]!r}"
            )
        out[key] = math.nan if out[key] is None else float(out[key])
    return out


def _check_aggregate(record: dict, index: int) -> dict:
    """An aggregated record's means as metric fields, after checking n_runs, mean, std and ci95."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    problems = [
        f"{key} is not a dict of metrics"
        for key in ("mean", "std", "ci95")
        if not isinstance(record.get(key), dict)
    ]
    if not (isinstance(record.get("n_runs"), int) and record["n_runs"] >= 1):
        problems.append(f"n_runs is {record.get('n_runs')!r}, not a positive integer")
    if not problems:
        problems += [
            f"{key} of {m} is {v!r}, not [low, high]"
            for key in ("ci95", "pi95")
            for m, v in record.get(key, {}).items()
            if v is not None
            and not (isinstance(v, list) and len(v) == 2 and all(map(number, v)) and v[0] <= v[1])
        ]
        problems += [
            f"std of {m} is {v!r}"
            for m, v in record["std"].items()
            if v is not None and not number(v)
        ]
    if problems:
        raise ValueError(
            f"aggregated record {index}: {'; '.join(problems)} (aggregate.py writes these records)"
        )
    return dict(record["mean"])


def paper_verdict(published: float | None, pi95) -> str | None:
    """Where a published number (one training run) lies against our 95% prediction interval of one
    new run [low, high]: "inside" it, "above" it (the paper's number is higher than the whole
    interval) or "below" it; None without a published number or an interval."""
    if published is None or not pi95:
        return None
    low, high = pi95
    return "above" if published > high else "below" if published < low else "inside"


def _placement(record: dict) -> str:
    """Which table a record belongs to: "2", "3", "4", "gzsl" or "other"."""
    part, task, test = record["part"], record["task"], record["test"]
    if part != "all":
        return "gzsl" if part in GZSL_PARTS and task == "annotation" else "other"
    if task == "annotation" and test in splits.ANNOTATION_TESTS:
        return "2"
    if task == "retrieval" and test in splits.RETRIEVAL_TESTS:
        return "3"
    return (
        "4"
        if task == "retrieval" and (record["train"], test) == (TABLE4_TRAIN, splits.TABLE4_TEST)
        else "other"
    )


def _metric_names(records) -> list[str]:
    """Metric keys present in the records, in the paper's order (other P@K after, by K)."""
    present = {key for record in records for key in record if METRIC_PATTERN.match(key)}
    return sorted(
        present,
        key=lambda m: (
            METRIC_ORDER.index(m) if m in METRIC_ORDER else 99,
            int(m[2:]) if m.startswith("P@") else 0,
        ),
    )


def _long_rows(record: dict, paper: dict) -> list[dict]:
    """One row per metric of a record: identity, placement, our value (an aggregate: the mean, with
    n, std and the interval), the published value, the difference and (an aggregate) the verdict."""
    table = _placement(record)
    rows = []
    for metric in _metric_names([record]):
        value = record[metric]
        ci95 = record.get("ci95", {}).get(metric)
        pi95 = record.get("pi95", {}).get(metric)
        published = (
            paper.get((*(record[k] for k in PAPER_KEYS[:-1]), metric))
            if record["part"] == "all"
            else None
        )
        rows.append(
            {
                **{key: record.get(key) for key in ROW_KEYS},
                "table": None if table == "other" else table,
                "metric": metric,
                "value": None if math.isnan(value) else value,
                "paper": published,
                # rounded: 0.0064, not the float noise 0.00639999... of the subtraction
                "diff": None
                if published is None or math.isnan(value)
                else round(value - published, 10),
                "verdict": paper_verdict(published, pi95),
                "n_runs": record.get("n_runs"),
                "std": record.get("std", {}).get(metric),
                "ci95_low": ci95 and ci95[0],
                "ci95_high": ci95 and ci95[1],
                **{count: _count(record.get(count)) for count in COUNTS},
                "pi95_low": pi95 and pi95[0],
                "pi95_high": pi95 and pi95[1],
            }
        )
    return rows


def _json_record(record: dict, paper: dict) -> dict:
    """An aggregated record for --format json: as aggregate.py wrote it (metric means in "mean"),
    plus its table and, per metric with a published number, "paper", "diff" and "verdict" (empty
    dicts elsewhere)."""
    rows = _long_rows(record, paper)
    out = {key: record[key] for key in (*ROW_KEYS, "n_runs", "runs") if key in record}
    out["mean"] = {r["metric"]: r["value"] for r in rows}
    out.update(
        {
            key: record[key]
            for key in ("std", "ci95", "pi95", *COUNTS, "lr", "lr_selection", "beats_prior")
            if key in record
        }
    )
    return {
        **out,
        "table": rows[0]["table"] if rows else None,
        **{
            key: {r["metric"]: r[key] for r in rows if r["paper"] is not None}
            for key in ("paper", "diff", "verdict")
        },
    }


def _cell(value, sign: str = "") -> str:
    """A metric with 4 decimals ("+": signed), "n/a" for NaN (every row skipped), "-" for no value;
    a count."""
    if value is None or isinstance(value, (int, str)):
        return "-" if value is None else str(value)
    return "n/a" if math.isnan(value) else f"{value:{sign}.4f}"


def _ours(record: dict, metric: str) -> str:
    """Our value of a metric: "mean ± half-width" of an aggregated record's confidence interval
    (the half-width of the side not clipped at 0 or 1), else the value alone."""
    ci95 = record.get("ci95", {}).get(metric)
    half = ci95 and max(record[metric] - ci95[0], ci95[1] - record[metric])
    return _cell(record.get(metric)) + (f" ± {half:.4f}" if ci95 else "")


def _count(value):
    """A count of evaluated/skipped rows; an aggregate's counts per run as "min..max" (one value if
    all equal)."""
    if not isinstance(value, list):
        return value
    known = [v for v in value if isinstance(v, int)]
    low, high = (min(known), max(known)) if known else (None, None)
    return low if low == high else f"{low}..{high}"


def dataset_tables(dataset: str, records: list[dict], paper: dict) -> list:
    """The tables of one dataset's records (normalized; `paper`: paper_index), in the paper's order:
    per table a dict ("table": "2", "3", "4", "gzsl" or "other"; "title"; "frame"; "notes";
    "records": those it shows), and lines of text where a table is left out or has no paper."""
    published_datasets = sorted({key[0] for key in paper})
    blocks = []
    if dataset not in published_datasets:
        blocks.append(
            f"No published numbers for dataset '{dataset}' (the paper reports "
            f"{' and '.join(d.upper() for d in published_datasets)} only): ours alone."
        )
    placed = {table: [r for r in records if _placement(r) == table] for table in TITLES}
    placed["4"], grid_rest, table4_notes = _table4_rows(placed["4"])
    placed["other"] += grid_rest
    for table in TITLES:  # in the paper's order, then the GZSL view and the rest
        models = sorted({r["model"] for r in placed[table]})
        if table == "4" and models and not {"embedding", "classification"} <= set(models):
            blocks.append(
                "Table 4 omitted: it compares the embedding and the classification model "
                "(retrieval "
                f"{TABLE4_TRAIN} / {splits.TABLE4_TEST}); found only: {', '.join(models)} (under "
                "'Other "
                "results'). Evaluate a run of the missing model and merge the runs (evaluate.py "
                "--collect)."
            )
            placed["other"], placed["4"] = placed["other"] + placed["4"], []
        if placed[table]:
            shows_paper = dataset in published_datasets and table in ("2", "3", "4")
            frame = (
                _gzsl_frame(placed[table])
                if table == "gzsl"
                else _metric_frame(table, placed[table], paper if shows_paper else None)
            )
            aggregated = any("n_runs" in r for r in placed[table])
            notes = [
                *NOTES[table],
                *[PAPER_NOTE.format(table)] * shows_paper,
                *[AGGREGATE_NOTE] * aggregated,
                *[VERDICT_NOTE] * (aggregated and shows_paper),
                *table4_notes * (table == "4"),
            ]
            blocks.append(
                {
                    "table": table,
                    "title": TITLES[table],
                    "frame": frame,
                    "notes": notes,
                    "records": placed[table],
                }
            )
    return blocks


def _table4_rows(records: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    """Table 4's rows: of a model trained on a learning-rate grid (aggregate.py's lr_selection), the
    original's lr and the lr chosen on validation, the variant saying which; the grid's other lrs
    go to "Other results". Returns (rows, others, notes)."""
    rows = [r for r in records if "lr_selection" not in r]
    others = []
    notes = []
    for record in (r for r in records if "lr_selection" in r):
        selection = record["lr_selection"]
        roles = [
            role
            for role, lr in (("original", TrainConfig.lr), ("chosen", selection["chosen"]))
            if record["lr"] == lr
        ]
        (rows if roles else others).append(
            {**record, "variant": f"{record['variant']} ({' + '.join(roles)})"} if roles else record
        )
        candidates = ", ".join(f"{lr}: {loss:.4f}" for lr, loss in selection["candidates"].items())
        lrs = [*selection["candidates"]]  # ascending
        notes += [
            f"lr grid: 'original' = the original's lr ({TrainConfig.lr}), 'chosen' = the lr with "
            "the lowest mean best validation loss over its seeds (train_summary.json; no test "
            "data); the grid's other lrs are under 'Other results'.",
            f"{record['model']}: mean best val_loss per lr: {candidates}"
            + (
                "; the chosen lr is at the edge of the grid: a wider grid may do better."
                if str(selection["chosen"]) in (lrs[0], lrs[-1])
                else "."
            ),
        ]
    notes += [
        f"{(r['model'] + ' ' + r['variant']).strip()}: {r['beats_prior'].count(False)} of "
        f"{r['n_runs']} runs did "
        "not get their best validation loss below that of the per-label prior (each label's "
        "training frequency as the prediction)."
        for r in rows
        if not all(r.get("beats_prior", [True]))
    ]
    return rows, others, list(dict.fromkeys(notes))


def _sorted(records: list[dict], table: str) -> list[dict]:
    """Our models first (other models' rows under ours), then the paper's order of the setups
    (others after, by first appearance); Table 4's embedding model first."""

    def order(known, key):  # the paper's order first, then first appearance
        return {
            value: i for i, value in enumerate(dict.fromkeys([*known, *(r[key] for r in records)]))
        }

    trains = order(splits.TRAIN_SETUPS, "train")
    tests = order(TABLE_TESTS.get(table, ()), "test")
    models = {"embedding": 0, "classification": 1} if table == "4" else {}
    return sorted(
        records,
        key=lambda r: (
            r["model"] not in OUR_MODELS,
            models.get(r["model"], 2),
            trains[r["train"]],
            tests[r["test"]],
        ),
    )


def _metric_frame(table: str, records: list[dict], paper: dict | None) -> pd.DataFrame:
    """One row per record: each metric's value (with `paper`: the published value and the
    difference), counts."""
    records = _sorted(records, table)
    metrics = {
        "2": [m for m in _metric_names(records) if not m.endswith("-l")],
        "4": ["AUC-l"],
        "3": [m for m in _metric_names(records) if m.endswith("-l")],
    }.get(table, _metric_names(records))
    rows = []
    aggregated = any("n_runs" in r for r in records)
    for record in records:
        row = {}
        published = {cell["metric"]: cell for cell in _long_rows(record, paper or {})}
        for metric in metrics:
            row[metric, "ours" if paper else ""] = (
                _ours(record, metric) if metric in record else "-"
            )
            if paper:
                cell = published.get(metric, {})
                row[metric, "paper"] = _cell(cell.get("paper"))
                row[metric, "diff"] = _cell(cell.get("diff"), "+")
                row.update({(metric, "paper is"): _cell(cell.get("verdict"))} if aggregated else {})
        rows.append({**row, **_counts(record, aggregated)})
    return _frame(
        rows,
        records,
        {
            "Train": "train",
            "Test": "test",
            **({"Task": "task", "Part": "part"} if table == "other" else {}),
        },
    )


def _gzsl_frame(records: list[dict]) -> pd.DataFrame:
    """Per (X+Y) setup and variant: each metric's seen part, unseen part and harmonic mean H; the
    counts."""
    variants: dict[tuple, dict[str, dict]] = {}
    aggregated = any("n_runs" in r for r in records)
    for record in _sorted(records, "gzsl"):
        key = tuple(
            record.get(k) for k in ("train", "test", "side_info", "model", "variant", "run")
        )
        variants.setdefault(key, {})[record["part"]] = record
    rows = []
    for parts in variants.values():
        seen, unseen, harmonic = (parts.get(part, {}) for part in GZSL_PARTS)
        row = {}
        for metric in _metric_names(records):
            s, u = seen.get(metric), unseen.get(metric)
            h = (
                _ours(harmonic, metric)
                if metric in harmonic
                else _cell(harmonic_mean(s, u) if s is not None and u is not None else None)
            )
            row.update(
                {
                    (metric, "seen"): _ours(seen, metric) if s is not None else "-",
                    (metric, "unseen"): _ours(unseen, metric) if u is not None else "-",
                    (metric, "H"): h,
                }
            )
        n = {("n", ""): _cell(next(iter(parts.values())).get("n_runs"))} if aggregated else {}
        rows.append(
            {
                **row,
                **n,
                **{
                    (f"{count} s/u", ""): f"{_cell(_count(seen.get(count)))}/"
                    f"{_cell(_count(unseen.get(count)))}"
                    for count in COUNTS
                },
            }
        )
    return _frame(
        rows,
        [next(iter(p.values())) for p in variants.values()],
        {"Train": "train", "Test": "test"},
    )


def _counts(record: dict, aggregated: bool) -> dict:
    """The count columns of a row: n (a table of aggregated records), evaluated, skipped."""
    return {
        **({("n", ""): _cell(record.get("n_runs"))} if aggregated else {}),
        **{(count, ""): _cell(_count(record.get(count))) for count in COUNTS},
    }


def _frame(rows: list[dict], records: list[dict], setup: dict[str, str]) -> pd.DataFrame:
    """Rows labelled by setup, side information, model (unless all embedding) and run; a two-level
    header if any."""
    names = {**setup, "Side info": "side_info"}
    names.update({"Model": "model"} if {r["model"] for r in records} != {"embedding"} else {})
    names.update({"Variant": "variant"} if any(r.get("variant") for r in records) else {})
    names.update({"Run": "run"} if any("run" in r for r in records) else {})
    index = pd.MultiIndex.from_tuples(
        [tuple("-" if r.get(k) is None else str(r[k]) for k in names.values()) for r in records],
        names=list(names),
    )
    frame = pd.DataFrame(rows, index=index)
    frame.columns = (  # two levels when any column has a sub-column
        pd.MultiIndex.from_tuples(frame.columns)
        if any(sub for _, sub in frame.columns)
        else [top for top, _ in frame.columns]
    )
    return frame


def render_comparison(rows: list[dict], fmt: str = "table", names=("A", "B")) -> str:
    """evaluate.py --compare as "table", "markdown", "csv" (the interval as ci95_low, ci95_high) or
    "json": across seeds (aggregate.compare_seeds: n_pairs, mean_diff, its paired t-interval and the
    sign-flip p of each setup and metric; `names`: the two folders), or within one trained pair
    (aggregate.compare_runs: A, B, A - B and its 95% paired bootstrap interval)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    across_seeds = bool(rows) and "n_pairs" in rows[0]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return pd.DataFrame(
            [
                {
                    **r,
                    "ci95_low": r["ci95"] and r["ci95"][0],
                    "ci95_high": r["ci95"] and r["ci95"][1],
                }
                for r in rows
            ],
            columns=SEED_COMPARISON_FIELDS if across_seeds else COMPARISON_FIELDS,
        ).to_csv(index=False, lineterminator="\n")
    if across_seeds:
        return _seed_comparison(rows, fmt, names)
    if not rows:
        return "No test setup to compare.\n"
    frame = pd.DataFrame(
        [
            {
                "A": _cell(r["a"]),
                "B": _cell(r["b"]),
                "A - B": _cell(r["diff"], "+"),
                "95% interval": f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]",
                "0 inside": "yes" if r["ci95"][0] <= 0 <= r["ci95"][1] else "no",
                "rows": r["rows"],
                "left out": r["left_out"],
            }
            for r in rows
        ],
        index=pd.MultiIndex.from_tuples(
            [(r["test"], r["task"], r["metric"]) for r in rows], names=["Test", "Task", "Metric"]
        ),
    )
    first = rows[0]
    notes = [
        f"A = {first['run_a']}",
        f"B = {first['run_b']}",
        "A - B = difference of the metric's means over the test rows (tracks: annotation, labels: "
        "retrieval) "
        "defined in both runs; 95% interval = 2.5th and 97.5th percentiles of A - B over "
        f"{first['resamples']} "
        f"paired bootstrap resamples of those rows (seed {first['seed']}).",
        "0 inside = no: the interval excludes 0, the sign of A - B holds at the 95% level for "
        "these two trained models on this test split; it says nothing about another training "
        "run or split (for that, --compare two folders of seed runs).",
        MULTIPLE_NOTE.format(len(rows), 0.05 * len(rows), 0.05 / len(rows)),
    ]
    return _render(
        "Paired comparison A - B within one trained pair (bootstrap over its test rows), dataset "
        f"{first['dataset']}",
        frame,
        notes,
        fmt,
    )


def _seed_comparison(rows: list[dict], fmt: str, names) -> str:
    """The table of aggregate.compare_seeds' rows, with notes on what each column answers."""
    n = max(r["n_pairs"] for r in rows)
    frame = pd.DataFrame(
        [
            {
                "A - B": _cell(r["mean_diff"], "+"),
                "95% interval": "-"
                if r["ci95"] is None
                else f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]",
                "p (sign flip)": f"{r['p_sign_flip']:.4f}",
                "n pairs": r["n_pairs"],
            }
            for r in rows
        ],
        index=pd.MultiIndex.from_tuples(
            [tuple(r[k] for k in SEED_COMPARISON_FIELDS[:5]) for r in rows],
            names=["Train", "Test", "Task", "Part", "Metric"],
        ),
    )
    notes = [
        f"A = {names[0]}",
        f"B = {names[1]}",
        "A - B = mean over the seeds of A's metric - B's (the two runs of a seed share the split "
        "and the init seed); 95% interval = paired t-interval of that mean (mean ± t(0.975, n-1) * "
        "std / sqrt(n) over the per-seed differences): where the mean difference over many seeds "
        "would lie, training and split luck included.",
        "p (sign flip) = exact two-sided permutation p-value: the share of the 2^n sign "
        "assignments of the per-seed differences whose |mean| is at least the observed one; n = "
        f"{n} pairs: it cannot be below {2 / 2**n:.4f}.",
        MULTIPLE_NOTE.format(len(rows), 0.05 * len(rows), 0.05 / len(rows)),
    ]
    return _render("Paired comparison A - B across seeds", frame, notes, fmt)


def split_columns(frame: pd.DataFrame, width: int = MAX_WIDTH) -> list[pd.DataFrame]:
    """The frame as consecutive column blocks of whole metric groups (a metric with its
    sub-columns; the last one with the count columns), each printed (with the row labels) at most
    `width` characters wide unless one group alone is wider."""
    names = list(dict.fromkeys(frame.columns.get_level_values(0)))
    groups = [[name] for name in names if METRIC_PATTERN.match(name)] or [[]]
    groups[-1] += [name for name in names if not METRIC_PATTERN.match(name)]
    blocks = [groups[0]]
    for group in groups[1:]:
        if _printed_width(frame[blocks[-1] + group]) <= width:
            blocks[-1] = blocks[-1] + group
        else:
            blocks.append(group)
    return [frame[block] for block in blocks]


def _printed_width(frame: pd.DataFrame) -> int:
    return max(map(len, frame.to_string().splitlines()))


def _render(title: str, frame: pd.DataFrame, notes: list[str], fmt: str) -> str:
    if fmt == "table":  # to_string prints a repeated setup name once, as the paper groups its rows
        return "\n".join(
            [
                title,
                "\n\n".join(part.to_string() for part in split_columns(frame)),
                *(
                    textwrap.fill(
                        note, MAX_WIDTH, initial_indent="  note: ", subsequent_indent="    "
                    )
                    for note in notes
                ),
            ]
        )
    flat = frame.reset_index()
    names = [" ".join(filter(None, c)) if isinstance(c, tuple) else c for c in flat.columns]
    align = [":---"] * frame.index.nlevels + ["---:"] * frame.shape[1]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join(align) + "|"]
    lines += [
        "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |"
        for row in flat.to_numpy()
    ]
    return "\n".join([f"**{title}**", "", *lines, "", *(f"- {note}" for note in notes)])

"""evaluate.py's result records (results.json) in the layout of the paper's Tables 2-4 (Choi et al., ISMIR 2019),
with the published numbers (reference/paper_tables.csv) and ours - paper for FMA and MSD, plus a clearly labelled
generalized zero-shot view; a record outside the paper's tables goes to "Other results", never dropped."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

import splits
from metrics import harmonic_mean

PAPER_TABLES_PATH = Path(__file__).resolve().parent / "reference" / "paper_tables.csv"
FORMATS = ("table", "markdown", "csv", "json")
GZSL_PARTS = ("seen", "unseen", "harmonic")
IDENTITY_KEYS = ("dataset", "model", "side_info", "train", "test", "task")
PAPER_KEYS = ("dataset", "model", "train", "test", "task", "metric")  # a published cell
METRIC_ORDER = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10", "AUC-l", "MAP-l")
METRIC_PATTERN = re.compile(r"^(AUC-[il]|MAP-[il]|P@\d+)$")
LONG_FIELDS = ("dataset", "model", "side_info", "train", "test", "task", "part", "run", "table", "metric", "value",
               "paper", "diff", "evaluated", "skipped")
TABLE_TESTS = {"2": splits.ANNOTATION_TESTS, "3": splits.RETRIEVAL_TESTS, "4": (splits.TABLE4_TEST,),
               "gzsl": splits.ANNOTATION_TESTS}
TABLE4_TRAIN = "A-X"  # evaluate.py tests B-X only after A-X training (B's tracks train the other setups)
TITLES = {"2": "Table 2. Zero-shot annotation (each test track ranks the test labels)",
          "3": "Table 3. Zero-shot retrieval (each test label ranks the test tracks)",
          "4": "Table 4. Retrieval on seen labels: deep embedding model vs classification model",
          "gzsl": "Beyond the paper: generalized zero-shot view (seen labels X / unseen labels Y / harmonic mean H)",
          "other": "Other results (not in the paper's tables)"}
_SKIPPED = "skipped = test {} (no defined AUC/AP); the metrics average the evaluated {}."
NOTES = {"2": [_SKIPPED.format("tracks whose labels are all negative or all positive", "tracks")],
         "3": [_SKIPPED.format("labels with no positive (or no negative) test track", "labels")],
         "4": [_SKIPPED.format("labels with no positive (or no negative) test track", "labels") + " (The paper's "
               "Table 4 footnote excluded such labels.)"],
         "gzsl": ["NOT IN THE PAPER. Annotation tests over X+Y (seen + unseen labels): 'seen' ranks each track over "
                  "the seen labels X only, 'unseen' over the unseen labels Y only; H = 2*seen*unseen/(seen+unseen), "
                  "the generalized zero-shot summary of Xian et al. (2018).",
                  "skipped s/u = tracks skipped in the seen / unseen part; n/a = all skipped (C has no seen label)."],
         "other": ["Records outside the paper's Tables 2-4 (e.g. test B-X of a run not trained on A-X, or Table 4 with "
                   "one model); published numbers, where any, are in the csv/json output."]}
PAPER_NOTE = ("paper = published value (Choi et al. 2019, Table {}; FMA used instrument side information, MSD GloVe), "
              "shown for every side information of ours; diff = ours - paper.")


def render_tables(records, fmt: str = "table") -> str:
    """Records (of one or several runs) as "table", "markdown", "csv" / "json" (a row per record and metric)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = [_normalize(record, i) for i, record in enumerate(records)]
    paper = {tuple(row[k] for k in PAPER_KEYS): row["value"] for row in load_paper_tables()}
    rows = [row for record in records for row in _long_rows(record, paper)]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return pd.DataFrame(rows, columns=LONG_FIELDS, dtype=object).to_csv(index=False, lineterminator="\n")
    if not records:
        return "No results to show.\n"
    return "\n\n".join(block for dataset in dict.fromkeys(r["dataset"] for r in records) for block in
                       _dataset_blocks(dataset, [r for r in records if r["dataset"] == dataset], paper, fmt)) + "\n"


def load_paper_tables(path: Path | str = PAPER_TABLES_PATH) -> list[dict]:
    """The published numbers: [{"table": int, "dataset", "model", "train", "test", "task", "metric", "value"}]."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = ["table", *PAPER_KEYS, "value"]
    if missing := sorted(set(expected) - set(frame.columns)):
        raise ValueError(f"{path}: missing column(s) {missing}; expected {expected}")
    return frame[expected].astype({"table": int, "value": float}).to_dict("records")


def _normalize(record, index: int) -> dict:
    """A checked copy of a record: part defaulted to "all", metric values as floats (NaN for null)."""
    if not isinstance(record, dict) or (missing := [key for key in IDENTITY_KEYS if key not in record]):
        problem = f"is a {type(record).__name__}" if not isinstance(record, dict) else f"lacks {missing}"
        raise ValueError(f"record {index} {problem}; a record is a dict with {list(IDENTITY_KEYS)}, as in results.json")
    out = {**record, "part": record.get("part", "all")}
    for key in filter(METRIC_PATTERN.match, record):
        if record[key] is not None and (isinstance(record[key], bool) or not isinstance(record[key], (int, float))):
            raise ValueError(f"record {index}: metric {key!r} must be a number or null, got {record[key]!r}")
        out[key] = math.nan if record[key] is None else float(record[key])
    return out


def _placement(record: dict) -> str:
    """Which table a record belongs to: "2", "3", "4", "gzsl" or "other"."""
    part, task, test = record["part"], record["task"], record["test"]
    if part != "all":
        return "gzsl" if part in GZSL_PARTS and task == "annotation" else "other"
    if task == "annotation" and test in splits.ANNOTATION_TESTS:
        return "2"
    if task == "retrieval" and test in splits.RETRIEVAL_TESTS:
        return "3"
    return "4" if task == "retrieval" and (record["train"], test) == (TABLE4_TRAIN, splits.TABLE4_TEST) else "other"


def _metric_names(records) -> list[str]:
    """Metric keys present in the records, in the paper's order (other P@K after, by K)."""
    present = {key for record in records for key in record if METRIC_PATTERN.match(key)}
    return sorted(present, key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99,
                                          int(m[2:]) if m.startswith("P@") else 0))


def _long_rows(record: dict, paper: dict) -> list[dict]:
    """One row per metric of a record: identity, placement, our value, the published value and the difference."""
    table, rows = _placement(record), []
    for metric in _metric_names([record]):
        value = record[metric]
        published = paper.get((*(record[k] for k in PAPER_KEYS[:-1]), metric)) if record["part"] == "all" else None
        rows.append({**{key: record.get(key) for key in LONG_FIELDS[:8]}, "table": None if table == "other" else
                     table, "metric": metric, "value": None if math.isnan(value) else value, "paper": published,
                     # rounded: 0.0064, not the float noise 0.00639999... of the subtraction
                     "diff": None if published is None or math.isnan(value) else round(value - published, 10),
                     "evaluated": record.get("evaluated"), "skipped": record.get("skipped")})
    return rows


def _cell(value, sign: str = "") -> str:
    """A metric with 4 decimals ("+": signed), "n/a" for NaN (every row skipped), "-" for no value; a count."""
    if value is None or isinstance(value, int):
        return "-" if value is None else str(value)
    return "n/a" if math.isnan(value) else f"{value:{sign}.4f}"


def _dataset_blocks(dataset: str, records: list[dict], paper: dict, fmt: str) -> list[str]:
    """The heading and the tables of one dataset, in the paper's order."""
    published_datasets = sorted({key[0] for key in paper})
    blocks = [f"## Dataset: {dataset}" if fmt == "markdown" else f"===== Dataset: {dataset} ====="]
    if dataset not in published_datasets:
        blocks.append(f"No published numbers for dataset '{dataset}' (the paper reports "
                      f"{' and '.join(d.upper() for d in published_datasets)} only): ours alone.")
    placed = {table: [r for r in records if _placement(r) == table] for table in TITLES}
    for table in TITLES:  # in the paper's order, then the GZSL view and the rest
        models = sorted({r["model"] for r in placed[table]})
        if table == "4" and models and not {"embedding", "classification"} <= set(models):
            blocks.append(f"Table 4 omitted: it compares the embedding and the classification model (retrieval "
                          f"{TABLE4_TRAIN} / {splits.TABLE4_TEST}); found only: {', '.join(models)} (under 'Other "
                          "results'). Evaluate a run of the missing model and merge the runs (evaluate.py --collect).")
            placed["other"], placed["4"] = placed["other"] + placed["4"], []
        if placed[table]:
            shows_paper = dataset in published_datasets and table in ("2", "3", "4")
            frame = _gzsl_frame(placed[table]) if table == "gzsl" else _metric_frame(
                table, placed[table], paper if shows_paper else None)
            blocks.append(_render(TITLES[table], frame, NOTES[table] + [PAPER_NOTE.format(table)] * shows_paper, fmt))
    return blocks


def _sorted(records: list[dict], table: str) -> list[dict]:
    """The paper's order of the setups (others after, by first appearance); Table 4's embedding model first."""
    def order(known, key):  # the paper's order first, then first appearance
        return {value: i for i, value in enumerate(dict.fromkeys([*known, *(r[key] for r in records)]))}
    trains, tests = order(splits.TRAIN_SETUPS, "train"), order(TABLE_TESTS.get(table, ()), "test")
    models = {"embedding": 0, "classification": 1} if table == "4" else {}
    return sorted(records, key=lambda r: (models.get(r["model"], 2), trains[r["train"]], tests[r["test"]]))


def _metric_frame(table: str, records: list[dict], paper: dict | None) -> pd.DataFrame:
    """One row per record: each metric's value (with `paper`: the published value and the difference), counts."""
    records = _sorted(records, table)
    metrics = {"2": [m for m in _metric_names(records) if not m.endswith("-l")], "4": ["AUC-l"],
               "3": [m for m in _metric_names(records) if m.endswith("-l")]}.get(table, _metric_names(records))
    rows = []
    for record in records:
        row, published = {}, {cell["metric"]: cell for cell in _long_rows(record, paper or {})}
        for metric in metrics:
            row[metric, "ours" if paper else ""] = _cell(record.get(metric))
            if paper:
                cell = published.get(metric, {})
                row[metric, "paper"], row[metric, "diff"] = _cell(cell.get("paper")), _cell(cell.get("diff"), "+")
        rows.append({**row, **{(count, ""): _cell(record.get(count)) for count in ("evaluated", "skipped")}})
    setup = {"Train": "train", "Test": "test", **({"Task": "task", "Part": "part"} if table == "other" else {})}
    return _frame(rows, records, setup)


def _gzsl_frame(records: list[dict]) -> pd.DataFrame:
    """Per (X+Y) setup and variant: each metric's seen part, unseen part and harmonic mean H; the counts."""
    variants: dict[tuple, dict[str, dict]] = {}
    for record in _sorted(records, "gzsl"):
        key = tuple(record.get(k) for k in ("train", "test", "side_info", "model", "run"))
        variants.setdefault(key, {})[record["part"]] = record
    rows = []
    for parts in variants.values():
        seen, unseen, harmonic = (parts.get(part, {}) for part in GZSL_PARTS)
        row = {}
        for metric in _metric_names(records):
            s, u = seen.get(metric), unseen.get(metric)
            h = harmonic.get(metric, harmonic_mean(s, u) if s is not None and u is not None else None)
            row.update({(metric, "seen"): _cell(s), (metric, "unseen"): _cell(u), (metric, "H"): _cell(h)})
        rows.append({**row, **{(f"{count} s/u", ""): f"{_cell(seen.get(count))}/{_cell(unseen.get(count))}"
                               for count in ("evaluated", "skipped")}})
    return _frame(rows, [next(iter(p.values())) for p in variants.values()], {"Train": "train", "Test": "test"})


def _frame(rows: list[dict], records: list[dict], setup: dict[str, str]) -> pd.DataFrame:
    """Rows labelled by setup, side information, model (unless all embedding) and run; a two-level header if any."""
    names = {**setup, "Side info": "side_info"}
    names.update({"Model": "model"} if {r["model"] for r in records} != {"embedding"} else {})
    names.update({"Run": "run"} if any("run" in r for r in records) else {})
    index = pd.MultiIndex.from_tuples([tuple(str(r.get(k, "-")) for k in names.values()) for r in records],
                                      names=list(names))
    frame = pd.DataFrame(rows, index=index)
    two_levels = any(sub for _, sub in frame.columns)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns) if two_levels else [top for top, _ in frame.columns]
    return frame


def _render(title: str, frame: pd.DataFrame, notes: list[str], fmt: str) -> str:
    if fmt == "table":  # to_string prints a repeated setup name once, as the paper groups its rows
        return "\n".join([title, frame.to_string(), *(f"  note: {note}" for note in notes)])
    flat = frame.reset_index()
    names = [" ".join(filter(None, c)) if isinstance(c, tuple) else c for c in flat.columns]
    align = [":---"] * frame.index.nlevels + ["---:"] * frame.shape[1]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in flat.to_numpy()]
    return "\n".join([f"**{title}**", "", *lines, "", *(f"- {note}" for note in notes)])

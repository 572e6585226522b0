"""Tests of tables.py: published numbers and differences in the right cells, no paper columns for
other datasets, csv/json round trips, Table 4 only with both models, the labelled generalized
zero-shot table, ordering, errors."""

import csv
import io
import json
import math

import pytest

import tables

ANNOTATION = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10")


def record(
    dataset,
    train,
    test,
    task,
    side_info="instrument-count",
    model="embedding",
    part="all",
    evaluated=100,
    skipped=3,
    **values,
):
    """A result record as evaluate.py writes it."""
    out = {
        "dataset": dataset,
        "model": model,
        "side_info": side_info,
        "train": train,
        "test": test,
        "task": task,
        "part": part,
    }
    out.update(values)
    out.update({"evaluated": evaluated, "skipped": skipped})
    return out


def annotation_values(auc=0.88, map_=0.5, p1=0.3, p5=0.4, p10=0.45):
    return {"AUC-i": auc, "MAP-i": map_, "P@1": p1, "P@5": p5, "P@10": p10}


def markdown_tables(text, dataset=None):
    """{title: [row dicts]} from render_tables(..., fmt="markdown"), keyed by the bold title line
    before a table; only the tables of the "## Dataset: <dataset>" section when dataset is given."""
    found, title, lines = {}, None, text.splitlines()
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## Dataset: "):
            section = line.removeprefix("## Dataset: ")
        elif line.startswith("**") and line.endswith("**") and dataset in (None, section):
            title = line.strip("*")
        elif line.startswith("| ") and title is not None:
            header = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows = []
            i += 2  # skip the alignment line
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(
                    dict(
                        zip(
                            header,
                            (cell.strip() for cell in lines[i].strip("|").split(" | ")),
                            strict=True,
                        )
                    )
                )
                i += 1
            found[title] = rows
            title = None
            continue
        i += 1
    return found


def find_table(found, prefix):
    matches = [rows for title, rows in found.items() if title.startswith(prefix)]
    assert len(matches) == 1, f"expected one table titled {prefix!r}, got {list(found)}"
    return matches[0]


def fma_records():
    return [
        record("fma", "A-X", "B-Y", "annotation", **annotation_values(auc=0.8800)),
        record("fma", "A-X", "(B+C)-Y", "retrieval", **{"AUC-l": 0.7000, "MAP-l": 0.1000}),
        record(
            "msd",
            "(A+B)-X",
            "C-(X+Y)",
            "annotation",
            side_info="glove",
            **annotation_values(p10=0.2000),
        ),
    ]


# --------------------------------------------------------------------------------------------------
# Published numbers


def test_load_paper_tables():
    rows = tables.load_paper_tables()
    # Table 2: 3 train setups x 6 tests x 5 metrics x 2 datasets; Table 3: 3 x 2 x 2 x 2; Table 4: 2
    # models x 2.
    assert len(rows) == 180 + 24 + 4
    cell = [
        r
        for r in rows
        if (r["dataset"], r["train"], r["test"], r["metric"]) == ("fma", "A-X", "B-Y", "AUC-i")
    ]
    assert cell == [
        {
            "table": 2,
            "dataset": "fma",
            "model": "embedding",
            "train": "A-X",
            "test": "B-Y",
            "task": "annotation",
            "metric": "AUC-i",
            "value": 0.8736,
        }
    ]
    table4 = {(r["dataset"], r["model"]): r["value"] for r in rows if r["table"] == 4}
    assert table4 == {
        ("fma", "embedding"): 0.7381,
        ("msd", "embedding"): 0.7161,
        ("fma", "classification"): 0.7250,
        ("msd", "classification"): 0.6980,
    }


def test_load_paper_tables_missing_column(tmp_path):
    bad = tmp_path / "paper.csv"
    bad.write_text("table,dataset,value\n2,fma,0.5\n")
    with pytest.raises(ValueError, match=r"paper\.csv: missing column"):
        tables.load_paper_tables(bad)


# --------------------------------------------------------------------------------------------------
# Paper values in the right cells


def test_markdown_paper_value_and_diff_in_the_right_cell():
    found = markdown_tables(tables.render_tables(fma_records(), fmt="markdown"), dataset="fma")
    row = find_table(found, "Table 2")[0]
    assert (row["Train"], row["Test"], row["Side info"]) == ("A-X", "B-Y", "instrument-count")
    assert row["AUC-i ours"] == "0.8800"
    assert row["AUC-i paper"] == "0.8736"
    assert row["AUC-i diff"] == "+0.0064"
    assert row["MAP-i paper"] == "0.5118" and row["MAP-i diff"] == "-0.0118"  # 0.5 - 0.5118
    assert row["P@10 paper"] == "0.5008"
    assert (row["evaluated"], row["skipped"]) == ("100", "3")
    table3 = find_table(found, "Table 3")
    assert table3[0]["AUC-l paper"] == "0.6793" and table3[0]["AUC-l diff"] == "+0.0207"
    assert table3[0]["MAP-l paper"] == "0.0904" and table3[0]["MAP-l diff"] == "+0.0096"


def test_msd_cell_uses_msd_numbers():
    text = tables.render_tables(fma_records(), fmt="markdown")
    row = find_table(markdown_tables(text, dataset="msd"), "Table 2")[0]
    assert (row["Train"], row["Test"]) == ("(A+B)-X", "C-(X+Y)")
    assert row["P@10 paper"] == "0.1780"  # msd, not fma (0.1738)
    assert row["P@10 diff"] == "+0.0220"


def test_plain_table_shows_ours_paper_diff_side_by_side():
    lines = tables.render_tables(fma_records()[:1], fmt="table").splitlines()
    title = lines.index("Table 2. Zero-shot annotation (each test track ranks the test labels)")
    groups, subs, names, row = lines[title + 1 : title + 5]
    # metric over its ours / paper / diff; 160 characters hold four metrics, P@10 and the counts
    # follow in a second block with the same row labels
    assert groups.split() == list(ANNOTATION[:4])
    assert subs.split() == ["ours", "paper", "diff"] * 4
    assert names.split() == ["Train", "Test", "Side", "info"]
    assert row.split() == [
        "A-X",
        "B-Y",
        "instrument-count",
        "0.8800",
        "0.8736",
        "+0.0064",
        "0.5000",
        "0.5118",
        "-0.0118",
        "0.3000",
        "0.3465",
        "-0.0465",
        "0.4000",
        "0.4810",
        "-0.0810",
    ]
    # Right-aligned: each number ends where its header does.
    assert row.index("0.8736") + len("0.8736") == subs.index("paper") + len("paper")
    assert row.index("+0.0064") + len("+0.0064") == subs.index("diff") + len("diff")
    assert lines[title + 5] == ""
    groups, subs, names, row = lines[title + 6 : title + 10]
    assert groups.split() == ["P@10", "evaluated", "skipped"]
    assert row.split() == [
        "A-X",
        "B-Y",
        "instrument-count",
        "0.4500",
        "0.5008",
        "-0.0508",
        "100",
        "3",
    ]


def full_fma_aggregate():
    """Aggregated records of every setup of Tables 2-4 and the GZSL view, two side-information
    kinds: the widest tables there are."""
    out = []

    def add(train, test, task, means, **keys):
        ci95 = {m: [v - 0.0123, v + 0.0123] for m, v in means.items()}
        out.append(aggregated(test=test, task=task, means=means, ci95=ci95, train=train, **keys))

    for kind in ("instrument-count", "instrument-confidence"):
        for train in ("A-X", "B-X", "(A+B)-X"):
            for test in ("B-Y", "C-Y", "(B+C)-Y", "B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)"):
                parts = ("all", "seen", "unseen", "harmonic") if "X+Y" in test else ("all",)
                for part in parts:
                    add(
                        train,
                        test,
                        "annotation",
                        dict.fromkeys(ANNOTATION, 0.8),
                        part=part,
                        side_info=kind,
                    )
            for test in ("(B+C)-Y", "(A+B+C)-Y"):
                add(train, test, "retrieval", {"AUC-l": 0.7, "MAP-l": 0.2}, side_info=kind)
    for model in ("embedding", "classification"):
        add("A-X", "B-X", "retrieval", {"AUC-l": 0.9}, model=model)
    return out


def test_no_printed_table_is_wider_than_160_characters():
    text = tables.render_tables(full_fma_aggregate(), fmt="table")
    assert max(map(len, text.splitlines())) <= tables.MAX_WIDTH
    # the GZSL view in blocks of whole metric groups (seen / unseen / H together), each metric once
    gzsl = text[text.index("Beyond the paper") :]
    headers = [line.split() for line in gzsl.splitlines() if line.lstrip().startswith("seen")]
    assert len(headers) > 1 and all(set(h) == {"seen", "unseen", "H"} for h in headers)
    assert sum(len(h) for h in headers) == 3 * len(ANNOTATION)
    for metric in ANNOTATION:
        assert sum(line.split().count(metric) for line in gzsl.splitlines()) == 1
    # each block repeats the row labels, so every row of a block names its setup
    assert gzsl.count("Train   Test") == len(headers)


def test_plain_table_groups_rows_like_the_paper():
    lines = tables.render_tables(demo_records(), fmt="table").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("(A+B)-X"))
    assert lines[first].split()[:3] == ["(A+B)-X", "B-Y", "instrument-count"]
    # the same setup is not repeated
    assert lines[first + 1].split()[:2] == ["random", "0.5500"]
    assert lines[first + 1].index("random") == lines[first].index("instrument-count")


def test_table_setups_and_order_are_the_papers():
    """tables takes the setups and their order from splits; the published numbers must agree."""
    import splits

    rows = tables.load_paper_tables()
    tests = {t: tuple(dict.fromkeys(r["test"] for r in rows if r["table"] == t)) for t in (2, 3, 4)}
    assert tests == {
        2: splits.ANNOTATION_TESTS,
        3: splits.RETRIEVAL_TESTS,
        4: (splits.TABLE4_TEST,),
    }
    assert (
        tuple(dict.fromkeys(r["train"] for r in rows if r["table"] in (2, 3)))
        == splits.TRAIN_SETUPS
    )
    assert {r["train"] for r in rows if r["table"] == 4} == {tables.TABLE4_TRAIN}


# --------------------------------------------------------------------------------------------------
# Other datasets: ours alone


def demo_records():
    return [
        record(
            "demo",
            "(A+B)-X",
            "B-Y",
            "annotation",
            side_info="instrument-count",
            **annotation_values(0.80),
        ),
        record(
            "demo",
            "(A+B)-X",
            "(B+C)-Y",
            "retrieval",
            side_info="instrument-count",
            **{"AUC-l": 0.75, "MAP-l": 0.2},
        ),
        record(
            "demo", "(A+B)-X", "B-Y", "annotation", side_info="random", **annotation_values(0.55)
        ),
        record(
            "demo",
            "(A+B)-X",
            "(B+C)-Y",
            "retrieval",
            side_info="random",
            **{"AUC-l": 0.52, "MAP-l": 0.05},
        ),
    ]


def test_demo_has_no_paper_columns_and_compares_side_info():
    for fmt in ("table", "markdown"):
        text = tables.render_tables(demo_records(), fmt=fmt)
        assert "No published numbers for dataset 'demo'" in text
        assert "paper" not in text.split("No published numbers")[1].replace("the paper reports", "")
    found = markdown_tables(tables.render_tables(demo_records(), fmt="markdown"))
    table2 = find_table(found, "Table 2")
    assert [(r["Test"], r["Side info"], r["AUC-i"]) for r in table2] == [
        ("B-Y", "instrument-count", "0.8000"),
        ("B-Y", "random", "0.5500"),
    ]
    assert set(table2[0]) == {"Train", "Test", "Side info", *ANNOTATION, "evaluated", "skipped"}
    table3 = find_table(found, "Table 3")
    assert [(r["Side info"], r["AUC-l"]) for r in table3] == [
        ("instrument-count", "0.7500"),
        ("random", "0.5200"),
    ]


def test_rows_follow_the_papers_order():
    records = [
        record("fma", train, test, "annotation", **annotation_values())
        for train in ("(A+B)-X", "B-X", "A-X")
        for test in ("(B+C)-(X+Y)", "C-Y", "B-Y")
    ]
    table2 = find_table(markdown_tables(tables.render_tables(records, fmt="markdown")), "Table 2")
    assert [(r["Train"], r["Test"]) for r in table2] == [
        (train, test)
        for train in ("A-X", "B-X", "(A+B)-X")
        for test in ("B-Y", "C-Y", "(B+C)-(X+Y)")
    ]


# --------------------------------------------------------------------------------------------------
# csv / json


def test_csv_round_trip():
    records = fma_records() + demo_records()
    rows = list(csv.DictReader(io.StringIO(tables.render_tables(records, fmt="csv"))))
    assert list(rows[0]) == list(tables.LONG_FIELDS)
    # one row per (record, metric)
    assert len(rows) == 5 + 2 + 5 + 5 + 2 + 5 + 2
    cell = next(
        r
        for r in rows
        if (r["dataset"], r["train"], r["test"], r["metric"]) == ("fma", "A-X", "B-Y", "AUC-i")
    )
    assert float(cell["value"]) == 0.88
    assert float(cell["paper"]) == 0.8736
    assert float(cell["diff"]) == pytest.approx(0.88 - 0.8736, abs=1e-12)
    assert cell["table"] == "2" and cell["part"] == "all" and cell["skipped"] == "3"
    demo = [r for r in rows if r["dataset"] == "demo"]
    assert demo and all(r["paper"] == "" and r["diff"] == "" for r in demo)
    assert {float(r["value"]) for r in demo if r["metric"] == "AUC-l"} == {0.75, 0.52}


def test_json_round_trip():
    records = fma_records() + demo_records()
    rows = json.loads(tables.render_tables(records, fmt="json"))
    assert isinstance(rows, list) and len(rows) == 26
    retrieval = next(r for r in rows if r["dataset"] == "fma" and r["metric"] == "MAP-l")
    assert retrieval["value"] == 0.1 and retrieval["paper"] == 0.0904
    assert retrieval["diff"] == pytest.approx(0.0096, abs=1e-12) and retrieval["table"] == "3"
    assert all(r["paper"] is None for r in rows if r["dataset"] == "demo")
    assert json.loads(tables.render_tables([], fmt="json")) == []
    assert tables.render_tables([], fmt="csv").strip() == ",".join(tables.LONG_FIELDS)


def test_nan_metric_renders_as_na_and_null():
    records = [
        record(
            "demo",
            "A-X",
            "C-(X+Y)",
            "annotation",
            part="seen",
            evaluated=0,
            skipped=40,
            **annotation_values(auc=float("nan"), map_=None),
        )
    ]
    rows = json.loads(tables.render_tables(records, fmt="json"))
    assert [r["value"] for r in rows][:2] == [None, None]
    assert "n/a" in tables.render_tables(records, fmt="table")


# --------------------------------------------------------------------------------------------------
# Table 4


def table4_records(models):
    values = {"embedding": 0.7400, "classification": 0.7100}
    return [
        record("fma", "A-X", "B-X", "retrieval", model=m, **{"AUC-l": values[m], "MAP-l": 0.3})
        for m in models
    ]


def test_table4_only_with_both_models():
    only = tables.render_tables(table4_records(["embedding"]), fmt="table")
    assert "Table 4." not in only
    assert "Table 4 omitted" in only and "classification" in only
    lone = find_table(
        markdown_tables(tables.render_tables(table4_records(["embedding"]), fmt="markdown")),
        "Other results",
    )
    assert [(r["Train"], r["Test"], r["AUC-l"]) for r in lone] == [("A-X", "B-X", "0.7400")]
    both = tables.render_tables(table4_records(["classification", "embedding"]), fmt="markdown")
    table4 = find_table(markdown_tables(both), "Table 4")
    assert [(r["Model"], r["AUC-l ours"], r["AUC-l paper"], r["AUC-l diff"]) for r in table4] == [
        ("embedding", "0.7400", "0.7381", "+0.0019"),
        ("classification", "0.7100", "0.7250", "-0.0150"),
    ]


def test_unplaced_records_are_shown_not_dropped():
    records = [record("fma", "B-X", "B-X", "retrieval", **{"AUC-l": 0.9, "MAP-l": 0.4})]
    found = markdown_tables(tables.render_tables(records, fmt="markdown"))
    other = find_table(found, "Other results")
    assert [(r["Train"], r["Test"], r["AUC-l"]) for r in other] == [("B-X", "B-X", "0.9000")]
    assert not any(title.startswith("Table 4") for title in found)


# --------------------------------------------------------------------------------------------------
# Generalized zero-shot view


def gzsl_records(with_harmonic):
    records = [
        record("fma", "A-X", "B-(X+Y)", "annotation", part="all", **annotation_values(0.88)),
        record(
            "fma",
            "A-X",
            "B-(X+Y)",
            "annotation",
            part="seen",
            skipped=1,
            **annotation_values(0.90, 0.6),
        ),
        record(
            "fma",
            "A-X",
            "B-(X+Y)",
            "annotation",
            part="unseen",
            skipped=7,
            **annotation_values(0.80, 0.4),
        ),
    ]
    if with_harmonic:
        records.append(
            record(
                "fma",
                "A-X",
                "B-(X+Y)",
                "annotation",
                part="harmonic",
                **annotation_values(0.1234, 0.48),
            )
        )
    return records


@pytest.mark.parametrize("with_harmonic", [False, True])
def test_gzsl_table_labelled_and_separate(with_harmonic):
    text = tables.render_tables(gzsl_records(with_harmonic), fmt="markdown")
    found = markdown_tables(text)
    gzsl = find_table(found, "Beyond the paper: generalized zero-shot view")
    assert "NOT IN THE PAPER" in text
    assert len(gzsl) == 1
    row = gzsl[0]
    assert (row["AUC-i seen"], row["AUC-i unseen"]) == ("0.9000", "0.8000")
    # H = 2 * 0.9 * 0.8 / 1.7 = 0.847058..., or the harmonic record's own value when there is one.
    assert row["AUC-i H"] == ("0.1234" if with_harmonic else "0.8471")
    assert row["MAP-i H"] == "0.4800"  # 2 * 0.6 * 0.4 / 1.0
    assert row["skipped s/u"] == "1/7"
    # Table 2 holds only the part "all" record; no paper column in the GZSL table.
    table2 = find_table(found, "Table 2")
    assert [r["AUC-i ours"] for r in table2] == ["0.8800"]
    assert not any("paper" in key for key in row)
    plain = tables.render_tables(gzsl_records(with_harmonic), fmt="table")
    assert "Beyond the paper: generalized zero-shot view" in plain


# --------------------------------------------------------------------------------------------------
# Errors and edge cases


def test_unknown_format():
    with pytest.raises(
        ValueError, match=r"unknown format 'html'; choose one of table, markdown, csv, json"
    ):
        tables.render_tables([], fmt="html")


def test_malformed_records():
    with pytest.raises(ValueError, match=r"record 1 lacks \['task'\]"):
        bad = record("fma", "A-X", "B-Y", "annotation")
        del bad["task"]
        tables.render_tables([record("fma", "A-X", "B-Y", "annotation"), bad])
    with pytest.raises(ValueError, match=r"record 0: metric 'AUC-i' must be a number"):
        tables.render_tables([record("fma", "A-X", "B-Y", "annotation", **{"AUC-i": "high"})])
    with pytest.raises(ValueError, match=r"record 0 is a list"):
        tables.render_tables([["fma"]])


def test_empty_records_and_default_part():
    assert tables.render_tables([]) == "No results to show.\n"
    legacy = record("fma", "A-X", "B-Y", "annotation", **annotation_values())
    del legacy["part"]  # part defaults to "all"
    assert "0.8736" in tables.render_tables([legacy])


def test_merged_runs_keep_datasets_apart_and_show_run_column():
    records = demo_records()[:1] + fma_records()[:1]
    records[0]["run"] = "runs/demo/instrument-count"
    text = tables.render_tables(records, fmt="table")
    assert text.index("Dataset: demo") < text.index("Dataset: fma")
    assert "runs/demo/instrument-count" in text
    assert math.isclose(json.loads(tables.render_tables(records, fmt="json"))[0]["value"], 0.80)


# --------------------------------------------------------------------------------------------------
# Aggregated records (aggregate.py: several seeds) and other models' rows


def aggregated(
    dataset="fma",
    test="B-Y",
    task="annotation",
    means=None,
    ci95=None,
    n=3,
    variant="",
    pi95=None,
    **keys,
):
    """An aggregated record as aggregate.py writes it (evaluate.py --collect); pi95 defaults to
    ci95."""
    means = means or {"AUC-i": 0.88, "MAP-i": 0.50}
    ci95 = ci95 if ci95 is not None else {"AUC-i": [0.87, 0.89], "MAP-i": [0.49, 0.51]}
    pi95 = ci95 if pi95 is None else pi95
    return {
        **record(dataset, keys.pop("train", "A-X"), test, task, **keys),
        "variant": variant,
        "n_runs": n,
        "runs": [f"runs/s{i}" for i in range(n)],
        "mean": means,
        "std": {m: 0.01 if n > 1 else None for m in means},
        "ci95": {m: ci95.get(m) for m in means},
        "pi95": {m: pi95.get(m) for m in means},
        "evaluated": [100, 101, 100][:n],
        "skipped": [3, 2, 3][:n],
    }


def test_paper_verdict_says_which_side_the_paper_is_on():
    assert tables.paper_verdict(0.8736, [0.87, 0.89]) == "inside"
    # the ends belong to the interval
    assert tables.paper_verdict(0.87, [0.87, 0.89]) == "inside"
    # the paper reports more than we do
    assert tables.paper_verdict(0.5118, [0.49, 0.51]) == "above"
    assert tables.paper_verdict(0.4, [0.49, 0.51]) == "below"
    assert (
        tables.paper_verdict(None, [0.49, 0.51]) is None and tables.paper_verdict(0.5, None) is None
    )


def test_aggregated_cells_show_mean_half_width_n_and_verdict():
    records = [
        aggregated(),
        aggregated(
            means={"AUC-i": 0.95, "MAP-i": 0.5},
            ci95={"AUC-i": [0.94, 0.96]},
            variant="epochs=20 weights=last",
        ),
        aggregated(n=1, ci95={}, variant="epochs=20 weights=last", side_info="random"),
    ]
    text = tables.render_tables(records, fmt="markdown")
    rows = find_table(markdown_tables(text), "Table 2")
    assert [
        (
            r["Variant"],
            r["AUC-i ours"],
            r["AUC-i paper"],
            r["AUC-i diff"],
            r["AUC-i paper is"],
            r["n"],
        )
        for r in rows
    ] == [
        ("", "0.8800 ± 0.0100", "0.8736", "+0.0064", "inside", "3"),
        ("epochs=20 weights=last", "0.9500 ± 0.0100", "0.8736", "+0.0764", "below", "3"),
        ("epochs=20 weights=last", "0.8800", "0.8736", "+0.0064", "-", "1"),
    ]
    assert (rows[0]["MAP-i paper is"], rows[1]["MAP-i ours"], rows[1]["MAP-i paper is"]) == (
        "above",
        "0.5000",
        "-",
    )
    assert (rows[0]["evaluated"], rows[0]["skipped"], rows[2]["evaluated"]) == (
        "100..101",
        "2..3",
        "100",
    )
    assert "mean ± half-width of the 95% confidence interval of our mean" in text
    assert "against our 95% prediction interval of one new run" in text
    plain = tables.render_tables(records[:1], fmt="table")
    assert "0.8800 ± 0.0100" in plain and "paper is" in plain


def test_verdict_is_judged_against_the_prediction_interval_of_one_run():
    """Paper 0.8736 (FMA A-X B-Y AUC-i, one run) lies above our mean's confidence interval but
    inside the prediction interval of one new run: "inside", since one run can land there."""
    one = aggregated(
        means={"AUC-i": 0.855}, ci95={"AUC-i": [0.8426, 0.8674]}, pi95={"AUC-i": [0.8302, 0.8798]}
    )
    assert tables.paper_verdict(0.8736, one["ci95"]["AUC-i"]) == "above"
    (row,) = json.loads(tables.render_tables([one], fmt="json"))
    assert row["verdict"] == {"AUC-i": "inside"} and row["pi95"] == {"AUC-i": [0.8302, 0.8798]}
    (flat,) = csv.DictReader(io.StringIO(tables.render_tables([one], fmt="csv")))
    assert (flat["verdict"], flat["ci95_high"], flat["pi95_low"], flat["pi95_high"]) == (
        "inside",
        "0.8674",
        "0.8302",
        "0.8798",
    )
    # an interval clipped at 1: the half-width of its other side
    high = aggregated(means={"AUC-i": 0.99}, ci95={"AUC-i": [0.97, 1.0]})
    cell = find_table(markdown_tables(tables.render_tables([high], fmt="markdown")), "Table 2")
    assert cell[0]["AUC-i ours"] == "0.9900 ± 0.0200"


def test_verdicts_only_for_fma_and_msd():
    records = [aggregated(dataset="demo"), aggregated(dataset="msd", side_info="glove")]
    found = markdown_tables(tables.render_tables(records, fmt="markdown"), dataset="demo")
    assert set(find_table(found, "Table 2")[0]) == {
        "Train",
        "Test",
        "Side info",
        "AUC-i",
        "MAP-i",
        "n",
        "evaluated",
        "skipped",
    }
    assert find_table(found, "Table 2")[0]["AUC-i"] == "0.8800 ± 0.0100"
    demo, msd = json.loads(tables.render_tables(records, fmt="json"))
    assert demo["paper"] == demo["verdict"] == {} and demo["mean"] == {"AUC-i": 0.88, "MAP-i": 0.5}
    assert msd["paper"] == {"AUC-i": 0.8559, "MAP-i": 0.3391} and msd["verdict"] == {
        "AUC-i": "below",
        "MAP-i": "below",
    }
    rows = list(csv.DictReader(io.StringIO(tables.render_tables(records, fmt="csv"))))
    assert [(r["dataset"], r["verdict"]) for r in rows] == [
        ("demo", ""),
        ("demo", ""),
        ("msd", "below"),
        ("msd", "below"),
    ]
    assert (rows[0]["value"], rows[0]["n_runs"], rows[0]["ci95_low"], rows[0]["ci95_high"]) == (
        "0.88",
        "3",
        "0.87",
        "0.89",
    )


def test_aggregated_gzsl_view():
    parts = [
        aggregated(test="B-(X+Y)", part=p, means={"AUC-i": v}, ci95={"AUC-i": [v - 0.02, v + 0.02]})
        for p, v in (("seen", 0.9), ("unseen", 0.8), ("harmonic", 0.84))
    ]
    row = find_table(
        markdown_tables(tables.render_tables(parts, fmt="markdown")), "Beyond the paper"
    )[0]
    assert (row["AUC-i seen"], row["AUC-i unseen"], row["AUC-i H"], row["n"]) == (
        "0.9000 ± 0.0200",
        "0.8000 ± 0.0200",
        "0.8400 ± 0.0200",
        "3",
    )


def test_other_models_rows_come_under_ours():
    external = record(
        "fma",
        "none",
        "B-Y",
        "annotation",
        model="clap",
        side_info="external",
        **annotation_values(0.70),
    )
    ours = record("fma", "(A+B)-X", "B-Y", "annotation", **annotation_values(0.80))
    table2 = find_table(
        markdown_tables(tables.render_tables([external, ours], fmt="markdown")), "Table 2"
    )
    assert [(r["Train"], r["Model"], r["AUC-i ours"], r["AUC-i paper"]) for r in table2] == [
        ("(A+B)-X", "embedding", "0.8000", "0.8864"),
        ("none", "clap", "0.7000", "-"),
    ]
    retrieval = record(
        "fma",
        "none",
        "(B+C)-Y",
        "retrieval",
        model="clap",
        side_info="external",
        **{"AUC-l": 0.6, "MAP-l": 0.1},
    )
    assert find_table(markdown_tables(tables.render_tables([retrieval], fmt="markdown")), "Table 3")


def test_malformed_aggregated_records():
    with pytest.raises(
        ValueError, match=r"aggregated record 0: ci95 of AUC-i is \[0.9, 0.8\], not \[low, high\]"
    ):
        tables.render_tables([aggregated(ci95={"AUC-i": [0.9, 0.8]})])
    with pytest.raises(
        ValueError, match=r"aggregated record 0: n_runs is 0, not a positive integer"
    ):
        tables.render_tables([aggregated(n=0)])
    with pytest.raises(ValueError, match=r"aggregated record 0: std is not a dict of metrics"):
        tables.render_tables([{**aggregated(), "std": 0.1}])


def comparison_rows():
    common = {
        "dataset": "demo",
        "test": "B-Y",
        "task": "annotation",
        "rows": 157,
        "left_out": 0,
        "resamples": 1000,
        "seed": 0,
        "run_a": "runs/a",
        "run_b": "runs/b",
    }
    return [
        {**common, "metric": "AUC-i", "a": 0.70, "b": 0.45, "diff": 0.25, "ci95": [0.18, 0.32]},
        {**common, "metric": "P@1", "a": 0.10, "b": 0.11, "diff": -0.01, "ci95": [-0.05, 0.03]},
    ]


def test_render_comparison():
    text = tables.render_comparison(comparison_rows(), fmt="markdown")
    rows = find_table(
        markdown_tables(text), "Paired comparison A - B within one trained pair (bootstrap"
    )
    assert [(r["Metric"], r["A - B"], r["95% interval"], r["0 inside"]) for r in rows] == [
        ("AUC-i", "+0.2500", "[+0.1800, +0.3200]", "no"),
        ("P@1", "-0.0100", "[-0.0500, +0.0300]", "yes"),
    ]
    assert (
        "A = runs/a" in text
        and "over 1000 paired bootstrap resamples of those rows (seed 0)" in text
    )
    assert "2 comparisons (setups x metrics) in this table" in text
    flat = list(csv.DictReader(io.StringIO(tables.render_comparison(comparison_rows(), fmt="csv"))))
    assert list(flat[0]) == list(tables.COMPARISON_FIELDS) and (
        flat[1]["ci95_low"],
        flat[1]["ci95_high"],
    ) == ("-0.05", "0.03")
    assert json.loads(tables.render_comparison(comparison_rows(), fmt="json")) == comparison_rows()
    assert tables.render_comparison([], fmt="table") == "No test setup to compare.\n"
    with pytest.raises(ValueError, match="unknown format 'html'"):
        tables.render_comparison([], fmt="html")


def seed_rows():
    common = {"train": "A-X", "test": "B-X", "task": "retrieval", "part": "all"}
    return [
        {
            **common,
            "metric": "AUC-l",
            "n_pairs": 5,
            "mean_diff": 0.02,
            "ci95": [0.01, 0.03],
            "p_sign_flip": 0.0625,
        },
        {
            **common,
            "metric": "MAP-l",
            "n_pairs": 1,
            "mean_diff": -0.01,
            "ci95": None,
            "p_sign_flip": 1.0,
        },
    ]


def test_render_comparison_across_seeds():
    text = tables.render_comparison(seed_rows(), fmt="markdown", names=("runs/emb", "runs/cls"))
    rows = find_table(markdown_tables(text), "Paired comparison A - B across seeds")
    assert [
        (r["Metric"], r["A - B"], r["95% interval"], r["p (sign flip)"], r["n pairs"]) for r in rows
    ] == [
        ("AUC-l", "+0.0200", "[+0.0100, +0.0300]", "0.0625", "5"),
        ("MAP-l", "-0.0100", "-", "1.0000", "1"),
    ]
    assert "A = runs/emb" in text and "B = runs/cls" in text
    assert "paired t-interval" in text and "n = 5 pairs: it cannot be below 0.0625" in text
    assert "2 comparisons (setups x metrics) in this table" in text and "p < 0.0250" in text
    flat = list(csv.DictReader(io.StringIO(tables.render_comparison(seed_rows(), fmt="csv"))))
    assert list(flat[0]) == list(tables.SEED_COMPARISON_FIELDS)
    assert (flat[0]["ci95_low"], flat[1]["ci95_low"], flat[1]["p_sign_flip"]) == ("0.01", "", "1.0")
    assert json.loads(tables.render_comparison(seed_rows(), fmt="json")) == seed_rows()


def grid_record(model, lr, auc, chosen, beats=None, side_info="instrument-count"):
    """An aggregated Table 4 record of one lr of a grid (aggregate.py: lr, lr_selection)."""
    candidates = {
        "embedding": {"0.001": 0.41, "0.008": 0.45},
        "classification": {"0.001": 0.2, "0.008": 0.11, "0.064": 0.12},
    }[model]
    out = aggregated(
        test="B-X",
        task="retrieval",
        means={"AUC-l": auc},
        ci95={"AUC-l": [auc - 0.01, auc + 0.01]},
        variant=f"lr={lr}",
        model=model,
        side_info=side_info,
        lr=lr,
        lr_selection={"chosen": chosen, "by": "val_loss", "candidates": candidates},
    )
    return out if beats is None else {**out, "beats_prior": beats}


def test_table4_shows_each_model_at_the_original_and_the_chosen_lr():
    records = [
        grid_record("embedding", 0.001, 0.74, 0.001),
        grid_record("embedding", 0.008, 0.70, 0.001),
        grid_record("classification", 0.001, 0.62, 0.008, [False, False, False], None),
        grid_record("classification", 0.008, 0.80, 0.008, [True, True, False], None),
        grid_record("classification", 0.064, 0.81, 0.008, [True, True, True], None),
    ]
    text = tables.render_tables(records, fmt="markdown")
    found = markdown_tables(text)
    table4 = find_table(found, "Table 4")
    assert [(r["Side info"], r["Model"], r["Variant"], r["AUC-l ours"]) for r in table4] == [
        ("instrument-count", "embedding", "lr=0.001 (original + chosen)", "0.7400 ± 0.0100"),
        ("-", "classification", "lr=0.001 (original)", "0.6200 ± 0.0100"),
        ("-", "classification", "lr=0.008 (chosen)", "0.8000 ± 0.0100"),
    ]
    others = find_table(found, "Other results")
    assert sorted((r["Model"], r["Variant"]) for r in others) == [
        ("classification", "lr=0.064"),
        ("embedding", "lr=0.008"),
    ]
    assert "the lr with the lowest mean best validation loss over its seeds" in text
    assert (
        "classification: mean best val_loss per lr: 0.001: 0.2000, 0.008: 0.1100, 0.064: 0.1200."
        in text
    )
    assert (
        "embedding: mean best val_loss per lr: 0.001: 0.4100, 0.008: 0.4500; the chosen lr is at "
        "the edge of the grid: a wider grid may do better." in text
    )
    assert (
        "classification lr=0.001 (original): 3 of 3 runs did not get their best validation loss"
        in text
    )
    assert "classification lr=0.008 (chosen): 1 of 3 runs did not" in text
    assert "lr=0.064: " not in text.split("Other results")[0]
    (first, *_) = json.loads(tables.render_tables(records, fmt="json"))
    assert first["lr"] == 0.001 and first["lr_selection"]["chosen"] == 0.001

"""Issue 21, "silently wrong": a reused result proves that it is current; a run is checked whole.

results.json is reused only when it was computed from this model.keras, config.json and data (by
content, not file times; test_evaluate.py's collect test covers the reasons); --collect averages
finished runs only; train_summary.json and model.keras name the config.json they belong to;
annotations and side information are compared by content (old runs' byte checksums still accepted);
huge finite embeddings keep their direction; a read-only run folder is evaluated without writing
into it; a torn model.keras is called damaged. Fast tests use test_evaluate's tiny world with
placeholder models (zip archives that are not Keras models: what they check happens before a model
is loaded); the slow ones evaluate a real, untrained model or train one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import h5py
import numpy as np
import pytest
from test_aggregate import compare_world, result, write_external
from test_aggregate import write_run as write_finished_run
from test_evaluate import (
    SIDE,
    assert_clean_error,
    build_dataset,
    fake_record,
    run_main,
    save_model,
    write_placeholder_model,
    write_results,
    write_run,
    write_summary,
)

import aggregate
import config
import dataset_dir as ds
import embeddings
import evaluate
import protocol
import splits
import train
from fileio import sha256_file, write_json


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An embedding run (A-X, an untrained model, no train_summary.json) evaluated once, as
    test_evaluate's fixture of that name."""
    root = tmp_path_factory.mktemp("provenance")
    run_dir = write_run(root / "run", build_dataset(root))
    save_model(run_dir / config.MODEL_FILE, "embedding")
    assert evaluate.main(["--run-dir", str(run_dir), "--no-progress", "--format", "json"]) == 0
    return {"data": root / "tiny", "run_dir": run_dir}


@pytest.fixture
def world(tmp_path):
    data = build_dataset(tmp_path)
    return data, write_run(tmp_path / "run", data)


def content_checksums(run_dir):
    """config.json's checksums as train.run_record writes them now: annotations and side
    information by content (test_evaluate.write_run writes byte checksums, as older versions)."""
    meta = json.loads((run_dir / "config.json").read_text())
    meta["checksums"]["annotations"] = splits.annotations_sha256(
        ds.read_annotations(ds.annotations_path(meta["dataset_dir"]))
    )
    meta["checksums"]["side_info"] = ds.side_info_sha256(ds.read_side_info(meta["side_info_path"]))
    write_json(run_dir / "config.json", meta)
    return meta


# ---- A run's identity, checked whole ------------------------------------------------------------
def test_model_and_summary_copied_from_a_run_on_another_split_are_refused(tmp_path, capsys):
    """Copying model.keras with train_summary.json from a run on another split was accepted (its
    unseen labels had been training labels); the summary names the config.json it belongs to."""
    ours = write_finished_run(tmp_path / "ours", [result()])
    theirs = write_finished_run(tmp_path / "theirs", [result()], seed=1, split="split-1")
    protocol.load_run(ours)  # whole before the copy
    for name in (config.MODEL_FILE, config.SUMMARY_FILE):
        shutil.copyfile(theirs / name, ours / name)
    code, _, err = run_main(["--run-dir", str(ours)], capsys)
    assert_clean_error(
        code,
        err,
        f"run {ours} no longer matches its data",
        "model.keras and train_summary.json belong to another config.json",
        "copied from another run",
    )
    # --collect does not reuse its results.json either
    code, _, err = run_main(["--collect", str(ours)], capsys)
    assert_clean_error(code, err, "belong to another config.json")


def test_config_json_edited_after_training_is_refused(world, capsys):
    """config.json edited after training (side information relabelled: another file, its checksum
    updated to match) was accepted and scored with the wrong labels."""
    data, run_dir = world
    relabelled = data / "side_info" / "y.csv"
    labels = list(SIDE)
    ds.write_side_info(relabelled, labels[1:] + labels[:1], np.asarray(list(SIDE.values())))
    write_summary(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    meta["side_info_path"] = str(relabelled)
    meta["checksums"]["side_info"] = sha256_file(relabelled)
    write_json(run_dir / "config.json", meta)
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, "belong to another config.json", "edited after training")


def test_an_unfinished_run_refuses_a_model_stamped_for_another_run(world, tmp_path, capsys):
    """A finished run's model.keras names its config.json (train.stamp_model): copied into a run
    without train_summary.json (still training), it is refused."""
    data, run_dir = world
    other = write_run(tmp_path / "other", data, train_setup="B-X")
    write_summary(other)
    shutil.copyfile(other / config.MODEL_FILE, run_dir / config.MODEL_FILE)
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(
        code, err, "model.keras was trained for another config.json (its zsl-music-run.json)"
    )
    # its own stamp, and none at all (a model saved during training), are accepted
    write_placeholder_model(run_dir / config.MODEL_FILE)
    protocol.load_run(run_dir)
    write_summary(run_dir)
    assert protocol.model_stamp(run_dir / config.MODEL_FILE) == {
        "config_sha256": sha256_file(run_dir / config.CONFIG_FILE)
    }
    assert protocol.load_run(run_dir).finished


@pytest.mark.parametrize("finished", [False, True])
def test_a_torn_model_is_called_damaged_not_missing(world, capsys, finished):
    """A truncated model.keras was reported as "File not found" (Keras' words), or, in a finished
    run, as another run's model."""
    run_dir = world[1]
    if finished:
        write_summary(run_dir)
    model = run_dir / config.MODEL_FILE
    model.write_bytes(model.read_bytes()[:-30])
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, f"{model} is damaged or unreadable", "not a complete .keras")
    assert "not found" not in err and "is not the model this run trained" not in err


@pytest.mark.slow
def test_training_binds_config_summary_and_model(tmp_path):
    """train.py's finish_run: train_summary.json records config.json's sha256 beside the model's,
    and model.keras carries it (a zip member Keras ignores: the model still loads)."""
    import keras
    from test_train import make_dataset, tiny_config

    data = make_dataset(tmp_path / "data")
    run_dir = train.run(tiny_config(data, tmp_path / "run", epochs=1))
    summary = json.loads((run_dir / config.SUMMARY_FILE).read_text())
    assert summary["config_sha256"] == sha256_file(run_dir / config.CONFIG_FILE)
    assert summary["model_sha256"] == sha256_file(run_dir / config.MODEL_FILE)
    assert protocol.model_stamp(run_dir / config.MODEL_FILE) == {
        "config_sha256": summary["config_sha256"]
    }
    keras.saving.load_model(run_dir / config.MODEL_FILE, compile=False)
    meta = json.loads((run_dir / config.CONFIG_FILE).read_text())
    assert meta["checksums"]["side_info"] == ds.side_info_sha256(
        ds.read_side_info(meta["side_info_path"])
    )
    run = protocol.load_run(run_dir)
    assert run.finished and run.provenance["config_sha256"] == summary["config_sha256"]


# ---- Data compared by content -----------------------------------------------------------------
def shuffle_rows(path, seed=0):
    """The CSV's data rows in another order: the same content in other bytes."""
    lines = path.read_text().splitlines(keepends=True)
    body = [lines[i] for i in np.random.default_rng(seed).permutation(range(1, len(lines)))]
    path.write_text(lines[0] + "".join(body))


def test_reordered_annotations_and_side_information_are_the_same_data(world):
    """Rows reordered without any change of content were refused as "changed since training"."""
    data, run_dir = world
    content_checksums(run_dir)
    before = protocol.load_run(run_dir).provenance
    for path in (data / "annotations.csv", data / "side_info" / "x.csv"):
        old = path.read_bytes()
        shuffle_rows(path)
        assert path.read_bytes() != old
    after = protocol.load_run(run_dir).provenance
    assert after == before  # content digests, hence the cache's fingerprint too
    # another content is still refused
    ds.write_side_info(
        data / "side_info" / "x.csv", list(SIDE), np.asarray(list(SIDE.values())) + 1e-3
    )
    with pytest.raises(protocol.EvaluationError, match="side_info file .* changed since training"):
        protocol.load_run(run_dir)


def test_side_info_digest_by_hand():
    """sha256 of the labels (sorted, as JSON) then their float32 vectors in that order."""
    info = ds.SideInfo(["b", "a"], np.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    expected = hashlib.sha256(b'["a", "b"]' + np.float32([[3, 4], [1, 2]]).tobytes()).hexdigest()
    assert ds.side_info_sha256(info) == expected
    swapped = ds.SideInfo(["a", "b"], np.asarray([[3.0, 4.0], [1.0, 2.0]], dtype=np.float32))
    assert ds.side_info_sha256(swapped) == expected
    relabelled = ds.SideInfo(["a", "b"], info.vectors)
    assert ds.side_info_sha256(relabelled) != expected


def test_old_runs_with_byte_checksums_are_evaluated_and_resumed(world):
    """A run trained before content digests (config.json: sha256 of the files' bytes) is accepted
    while the bytes match, by evaluation and by train.py's resume check (which now compares the
    content digests train.run_record writes)."""
    data, run_dir = world
    old = json.loads((run_dir / "config.json").read_text())
    assert old["checksums"]["side_info"] == sha256_file(data / "side_info" / "x.csv")
    protocol.load_run(run_dir)
    record = {**old, "checksums": content_checksums(run_dir)["checksums"]}
    write_json(run_dir / "config.json", old)
    assert record["checksums"]["side_info"] != old["checksums"]["side_info"]
    train.check_same_run(run_dir, record)  # no error: the same data
    ds.write_side_info(
        data / "side_info" / "x.csv", list(SIDE), np.asarray(list(SIDE.values())) * 2
    )
    record["checksums"]["side_info"] = ds.side_info_sha256(
        ds.read_side_info(data / "side_info" / "x.csv")
    )
    with pytest.raises(train.TrainError, match="checksum of side_info"):
        train.check_same_run(run_dir, record)


# ---- --collect: finished runs, the same data ----------------------------------------------------
def test_collect_leaves_unfinished_runs_out_or_keeps_them_apart(tmp_path):
    finished = [
        write_finished_run(tmp_path / f"seed{s}", [result(**{"AUC-i": auc})], seed=s)
        for s, auc in ((0, 0.8), (1, 0.9))
    ]
    running = write_finished_run(tmp_path / "seed2", [result(**{"AUC-i": 0.1})], seed=2)
    (running / config.SUMMARY_FILE).unlink()
    write_results(running, [result(**{"AUC-i": 0.1})])  # as evaluate.py wrote it during training
    records, notes = aggregate.collect([*finished, running], aggregated=True)
    assert [(r["n_runs"], r["mean"]["AUC-i"]) for r in records] == [(2, pytest.approx(0.85))]
    assert any("left out 1 unfinished run(s) (no train_summary.json" in n for n in notes)
    records, _ = aggregate.collect([*finished, running], aggregated=True, include_unfinished=True)
    assert [(r["variant"], r["n_runs"], r["mean"]["AUC-i"]) for r in records] == [
        ("training=finished", 2, pytest.approx(0.85)),
        ("training=unfinished", 1, pytest.approx(0.1)),
    ]
    per_run, _ = aggregate.collect([*finished, running], include_unfinished=True)
    assert [r.get("variant") for r in per_run] == [None, None, "training=unfinished"]


def test_compare_names_an_unfinished_run(tmp_path):
    run_a, run_b, _ = compare_world(tmp_path, np.random.default_rng(2))
    (run_b / config.SUMMARY_FILE).unlink()
    write_results(run_b, json.loads((run_b / "results.json").read_text()))
    rows, notes = aggregate.compare(run_a, run_b, resamples=1000)
    assert rows and [n for n in notes if "training has not finished" in n] == [
        f"{run_b}: training has not finished (no train_summary.json): compared as it is so far."
    ]


def test_runs_on_a_dataset_rebuilt_in_place_are_never_averaged(world, tmp_path):
    """Run A was evaluated, then its dataset's mel store rebuilt in place and run B trained on it:
    A's results.json (newer than its model) was reused and averaged with B's as "differing only in
    their seeds". Now A is refused, naming what changed."""
    data, first = world
    second = write_run(tmp_path / "second", data)
    for run_dir in (first, second):
        meta = json.loads((run_dir / "config.json").read_text())
        meta["config"]["seed"] = 0 if run_dir == first else 1
        write_json(run_dir / "config.json", meta)
        write_summary(run_dir)
        write_results(run_dir, [fake_record(auc=0.5 if run_dir == first else 0.7)])
    (record,), _ = aggregate.collect([first, second], aggregated=True)  # the same data
    assert record["n_runs"] == 2
    with h5py.File(data / "mels.h5", "r+") as store:  # rebuilt: other statistics
        store.attrs["mean"] = 0.3
    meta = json.loads((second / "config.json").read_text())  # B trained on the new store
    meta["checksums"]["mels"]["mean"] = 0.3
    write_json(second / "config.json", meta)
    write_placeholder_model(second / config.MODEL_FILE)
    write_summary(second)
    write_results(second, [fake_record(auc=0.7)])
    with pytest.raises(protocol.EvaluationError) as refused:
        aggregate.collect([first, second], aggregated=True)
    assert f"run {first} no longer matches its data" in str(refused.value)
    assert "mean is 0.3, config.json recorded 0.25 (store rebuilt)" in str(refused.value)


def test_external_results_on_other_annotations_stay_apart_with_a_note(tmp_path):
    """External models' folders are never re-evaluated; scored on other annotations they are other
    experiments, and a note says when their split or annotations changed since."""
    data = build_dataset(tmp_path)
    split = data / "splits" / "split_seed0.json"
    records = [{**result(**{"AUC-i": 0.7}), "model": "clap", "train": "none"}]
    folders = []
    for name, scored_on in (("old", "0" * 64), ("new", None)):
        folder = write_external(tmp_path / name, records)
        meta = json.loads((folder / "external.json").read_text())
        meta["dataset_dir"] = str(data)
        meta["split"] = {"path": str(split), "sha256": sha256_file(split)}
        meta["annotations_sha256"] = scored_on or splits.annotations_sha256(
            ds.read_annotations(data / "annotations.csv")
        )
        write_json(folder / "external.json", meta)
        folders.append(folder)
    records, notes = aggregate.collect(folders, aggregated=True)
    assert [r["n_runs"] for r in records] == [1, 1]
    changed = [n for n in notes if "changed (or went) since this external model was scored" in n]
    assert len(changed) == 1 and changed[0].startswith(f"{folders[0]}: the annotations file")


# ---- Huge finite embeddings ---------------------------------------------------------------------
def test_unit_rows_of_huge_values_keep_their_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    for scale in (1e200, 1e-200, 1.0):
        np.testing.assert_allclose(embeddings.unit_rows(x * scale), expected, rtol=1e-12)
    assert not embeddings.unit_rows(np.zeros((2, 3))).any()  # a zero row stays zero
    np.testing.assert_allclose(
        embeddings.cosine_scores(x * 1e200, x[:2] * 1e300), embeddings.cosine_scores(x, x[:2])
    )


# ---- A read-only run folder ---------------------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch):
    """make(folder): a read-only folder, chmod 0o555; for root (whom permission bits do not stop),
    also what the kernel does for anyone else: os.access denies writing, no file can be created."""
    made = []

    def make(folder):
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() == 0:
            access = os.access
            mkstemp = tempfile.mkstemp

            def denied(path, mode, **kwargs):
                inside = os.path.exists(path) and os.path.samefile(path, folder)
                return access(path, mode, **kwargs) and not (mode & os.W_OK and inside)

            def refused(*args, dir=None, **kwargs):
                if dir is not None and os.path.samefile(dir, folder):
                    raise PermissionError(13, "Permission denied", str(dir))
                return mkstemp(*args, dir=dir, **kwargs)

            monkeypatch.setattr(os, "access", denied)
            monkeypatch.setattr(tempfile, "mkstemp", refused)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


@pytest.mark.slow
def test_a_read_only_run_folder_is_evaluated_without_writing_into_it(
    trained, tmp_path, capsys, read_only
):
    """An archived or shared run could not be evaluated (the embedding cache write failed with a
    traceback): it is evaluated, results printed, nothing written into it, a note saying so."""
    run_dir = tmp_path / "archived"
    shutil.copytree(trained["run_dir"], run_dir)
    (run_dir / "results.json").unlink()
    (run_dir / embeddings.CACHE_FILE).unlink()
    before = sorted(p.name for p in run_dir.iterdir())
    read_only(run_dir)
    code, out, err = run_main(["--run-dir", str(run_dir), "--format", "json"], capsys)
    assert code == 0, err
    assert "is read-only (an archived or shared run): results.json" in err
    assert {r["test"] for r in json.loads(out)} >= {"B-Y", "(A+B+C)-Y"}
    assert sorted(p.name for p in run_dir.iterdir()) == before
    ours = {
        (r["test"], r["task"], r["part"]): r["AUC-i"] if "AUC-i" in r else r["AUC-l"]
        for r in json.loads((trained["run_dir"] / "results.json").read_text())
    }
    printed = {
        (r["test"], r["task"], r["part"]): r["value"]
        for r in json.loads(out)
        if r["metric"] in ("AUC-i", "AUC-l")
    }
    assert printed == pytest.approx(ours)
    code, _, err = run_main(["--run-dir", str(run_dir), "--save-scores"], capsys)
    assert_clean_error(code, err, "is read-only: --save-scores cannot write scores/")


# ---- evaluate.py on an unfinished run -----------------------------------------------------------
@pytest.mark.slow
def test_evaluate_says_whether_training_had_finished(trained, tmp_path, capsys):
    """evaluate.py on a run without train_summary.json (training still running, or interrupted)
    says so in its tables and records "finished": false; true once training has finished. The
    embedding cache's fingerprint takes side information by content: reordered rows keep it."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run_dir)
    content_checksums(run_dir)  # config.json as train.py writes it now
    code, out, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert code == 0, err
    assert "training=unfinished" in out and "training has not finished" in err
    assert {r["finished"] for r in json.loads((run_dir / "results.json").read_text())} == {False}
    write_summary(run_dir)
    code, out, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert code == 0 and "unfinished" not in out and "not finished" not in err
    assert {r["finished"] for r in json.loads((run_dir / "results.json").read_text())} == {True}
    records = json.loads((run_dir / "results.json").read_text())
    shuffle_rows(trained["data"] / "side_info" / "x.csv")
    try:
        again, notes = protocol.evaluate_run(run_dir, progress=False)
    finally:  # the module's fixture shares the dataset
        ds.write_side_info(
            trained["data"] / "side_info" / "x.csv", list(SIDE), np.asarray(list(SIDE.values()))
        )
    assert any("9 from embeddings.h5, 0 computed." in n for n in notes)
    assert again == records

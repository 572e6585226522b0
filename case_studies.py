"""The paper's case studies (Sec. 6, Tables 5-7) on one trained run; run through evaluate.py:

    python evaluate.py --run-dir runs/X --query guitar      # Table 5: top tracks for a word
    python evaluate.py --run-dir runs/X --annotate song.mp3 # Table 6: top labels of an audio file
    python evaluate.py --run-dir runs/X --neighbors lovely  # Table 7: nearest labels, two spaces

A word's side vector is its row in the run's side-information file; with GloVe side information, any
word of the GloVe file that the dataset's summary.json records (read with
preprocess.common.read_glove).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import dataset_dir as ds
import embeddings
import protocol
from preprocess import frontend
from preprocess.common import read_glove
from preprocess.melstore import MelStore
from protocol import EvaluationError

DEFAULT_TOP = {"query": 5, "annotate": 10, "neighbors": 10}  # paper Tables 5, 6 and 7
# side information whose vectors are GloVe word vectors: any GloVe word has one
GLOVE_KINDS = ("glove",)


def label_status(run, word: str) -> str:
    return (
        "seen label"
        if word in run.seen
        else "unseen label"
        if word in run.unseen
        else "outside the label set"
    )


def word_vector(run, word: str, progress: bool = True) -> tuple[np.ndarray, str]:
    """(side_dim,) side vector of a word and where it comes from: the run's side-information file,
    else (GloVe side information only) the GloVe file."""
    if word in run.side_info.labels:
        return ds.side_vectors(run.side_info, [word], str(run.side_info_path))[0], str(
            run.side_info_path
        )
    if run.side_info_kind not in GLOVE_KINDS:
        raise EvaluationError(
            f"{word!r} has no side-information vector: it is not a label of {run.side_info_path} "
            f"({len(run.side_info.labels)} labels), and only GloVe side information can describe "
            "other words."
        )
    summary = ds.summary_path(run.dataset_dir)
    path = (
        json.loads(summary.read_text(encoding="utf-8")).get("glove_path")
        if summary.is_file()
        else None
    )
    if not path:
        raise EvaluationError(
            f"{summary} records no glove_path, so words outside {run.side_info_path} have no "
            "vector (the MSD adapter records the GloVe file it used)."
        )
    vectors, dim = read_glove(path, [word], progress=progress)
    if word not in vectors:
        hint = (
            f" (GloVe tokens are matched exactly; try {word.lower()!r})"
            if word != word.lower()
            else ""
        )
        raise EvaluationError(
            f"{word!r} has no vector: not a label of {run.side_info_path} and not a word of "
            f"{path}{hint}."
        )
    if dim != run.side_info.dim:
        raise EvaluationError(
            f"{path} has {dim}-d vectors but {run.side_info_path} {run.side_info.dim}-d ones: "
            "summary.json records another GloVe file than the side information was made from."
        )
    return np.asarray(vectors[word], dtype=np.float32), str(path)


def query(
    run,
    word: str,
    top: int = DEFAULT_TOP["query"],
    progress: bool = True,
    batch_size: int = protocol.DEFAULT_BATCH_SIZE,
) -> dict:
    """Top tracks for a word (paper Table 5) among the split's tracks with a mel (A+B+C), by cosine
    between the word's label embedding and the track embeddings, with each track's ground-truth
    labels and audio path."""
    if run.is_embedding:
        vector, source = word_vector(run, word, progress)
    elif word not in run.seen_labels:
        raise EvaluationError(
            f"{word!r} is not one of the {len(run.seen_labels)} seen labels that the "
            f"classification model {run.run_dir} scores."
        )
    with MelStore(run.mels_path, in_memory=False) as store:
        tracks, _, _ = protocol.setup_members(run.split, "(A+B+C)-Y", set(store.track_ids))
        track_emb, _, _ = protocol.embed(
            run, store, tracks, batch_size=batch_size, progress=progress
        )
    if run.is_embedding:
        # (n_tracks,)
        scores = embeddings.cosine_scores(track_emb, run.semantic(vector[None]))[:, 0]
    else:
        source = "classification output"
        scores = protocol.setup_scores(run, track_emb, None, [word])[:, 0]
    best = np.argsort(-scores, kind="stable")[:top]
    top_ids = [tracks[i] for i in best]
    # only the top tracks (MSD: 1M pairs)
    found = run.annotations[run.annotations["track_id"].isin(top_ids)]
    paths = ds.read_tracks(ds.tracks_path(run.dataset_dir)).set_index("track_id")["path"]
    rows = [
        {
            "rank": r + 1,
            "track_id": t,
            "score": float(scores[i]),
            "labels": sorted(found["label"][found["track_id"] == t]),
            "path": str(paths.get(t, "")),
        }
        for r, (i, t) in enumerate(zip(best, top_ids, strict=True))
    ]
    return {
        "query": word,
        "status": label_status(run, word),
        "vector_from": source,
        "n_tracks": len(tracks),
        "tracks": rows,
    }


def annotate(
    run,
    audio_path,
    top: int = DEFAULT_TOP["annotate"],
    max_seconds: float | None = None,
    progress: bool = True,
    batch_size: int = protocol.DEFAULT_BATCH_SIZE,
) -> dict:
    """Top labels for any audio file (paper Table 6): its frames standardized with the store's mean
    and std, its track embedding, scored against the split's labels (the classification model: its
    seen labels)."""
    with MelStore(run.mels_path, in_memory=False) as store:
        mean = store.mean
        std = store.std
    try:
        frames = frontend.file_frames(audio_path, mean, std, max_seconds=max_seconds)  # (n, 128)
    except frontend.AudioError as exc:
        raise EvaluationError(f"--annotate {audio_path}: {exc}") from None
    segments = frontend.segments(frames, frontend.SEGMENT_FRAMES)  # (k, 130, 128)
    # (1, d)
    track = embeddings.track_embedding(lambda x: run.predict(x, batch_size), segments)[None]
    labels = run.labels if run.is_embedding else run.seen_labels
    label_emb = protocol.label_embeddings(run, run.labels) if run.is_embedding else None
    scores = protocol.setup_scores(run, track, label_emb, labels)[0]
    best = np.argsort(-scores, kind="stable")[:top]
    rows = [
        {
            "rank": r + 1,
            "label": labels[i],
            "score": float(scores[i]),
            "unseen": labels[i] in run.unseen,
        }
        for r, i in enumerate(best)
    ]
    return {"file": str(audio_path), "segments": len(segments), "labels": rows}


def _nearest(
    vector: np.ndarray, vectors: np.ndarray, names: list[str], exclude: str, top: int, unseen
) -> list:
    cosines = embeddings.cosine_scores(vector[None], vectors)[0]
    order = [i for i in np.argsort(-cosines, kind="stable") if names[i] != exclude][:top]
    return [
        {
            "rank": r + 1,
            "label": names[i],
            "cosine": float(cosines[i]),
            "unseen": names[i] in unseen,
        }
        for r, i in enumerate(order)
    ]


def neighbors(run, word: str, top: int = DEFAULT_TOP["neighbors"], progress: bool = True) -> dict:
    """Nearest labels of a word (paper Table 7) among the split's labels, by cosine in the
    side-information space and in the trained embedding space (semantic-module outputs). The word
    itself is left out."""
    if not run.is_embedding:
        raise EvaluationError(
            f"--neighbors needs a deep embedding run; {run.run_dir} is a classification model."
        )
    vector, source = word_vector(run, word, progress)
    raw = ds.side_vectors(run.side_info, run.labels, str(run.side_info_path))  # (m, side_dim)
    embedded = run.semantic(np.concatenate([raw, vector[None]]))  # (m + 1, 100): one predict call
    return {
        "query": word,
        "status": label_status(run, word),
        "vector_from": source,
        "side_information": _nearest(vector, raw, run.labels, word, top, run.unseen),
        "embedding": _nearest(embedded[-1], embedded[:-1], run.labels, word, top, run.unseen),
    }


def render(kind: str, result: dict, fmt: str) -> str:
    """A case study's result as a titled table in `fmt` (table | markdown | csv)."""
    mark = lambda row: f"{row['label']} (unseen)" if row["unseen"] else row["label"]  # noqa: E731
    if kind == "query":
        title = (
            f"Top {len(result['tracks'])} of {result['n_tracks']} tracks for {result['query']!r} "
            f"({result['status']}; vector from {result['vector_from']})"
        )
        rows = [
            [r["rank"], r["track_id"], f"{r['score']:.4f}", ", ".join(r["labels"]), r["path"]]
            for r in result["tracks"]
        ]
        columns = ["rank", "track_id", "score", "labels", "path"]
    elif kind == "annotate":
        title = (
            f"Top {len(result['labels'])} labels for {result['file']} ({result['segments']} "
            "segments)"
        )
        rows = [[r["rank"], mark(r), f"{r['score']:.4f}"] for r in result["labels"]]
        columns = ["rank", "label", "score"]
    else:
        title = (
            f"Nearest labels to {result['query']!r} ({result['status']}; vector from "
            f"{result['vector_from']}): "
            "general (side-information) space vs zero-shot embedding space"
        )
        rows = [
            [a["rank"], mark(a), f"{a['cosine']:.4f}", mark(b), f"{b['cosine']:.4f}"]
            for a, b in zip(result["side_information"], result["embedding"], strict=True)
        ]
        columns = ["rank", "side information", "cosine", "embedding", "cosine"]
    frame = pd.DataFrame(rows, columns=columns)
    if fmt == "csv":
        return f"# {title}\n{frame.to_csv(index=False)}"
    if fmt == "markdown":
        lines = [columns, ["---"] * len(columns)] + rows
        return f"**{title}**\n\n" + "".join(f"| {' | '.join(map(str, line))} |\n" for line in lines)
    return f"{title}\n{frame.to_string(index=False)}\n"

"""Embed a dataset directory's tracks and labels with LAION-CLAP, in the exchange format of
evaluate.py --external.

    pip install laion-clap          # PyTorch; the weights are downloaded on first use (not part of
                                    this project)
    python examples/clap_embeddings.py --dataset data/demo --out clap.npz
    python evaluate.py --external clap.npz --dataset demo --name clap

Audio tower: CLAP_Module.get_audio_embedding_from_filelist on each file of tracks.csv (the
    non-fusion model reads
10 s at 48 kHz: a random excerpt of a longer file, hence the seeds). Text tower:
    CLAP_Module.get_text_embedding of
one prompt per label of annotations.csv, by default "This audio is a {label} song." (--prompt): text
towers are sensitive to the prompt, so report it with the results. Nothing in the project imports or
tests this script.
"""

import argparse
import random
from pathlib import Path

import numpy as np
import pandas as pd

PROMPT = "This audio is a {label} song."


def read_dataset(dataset: Path) -> tuple[list[str], list[Path], list[str]]:
    """(track ids, audio paths, sorted labels) of a dataset directory (data/README.md)."""
    tracks = pd.read_csv(dataset / "tracks.csv", dtype=str, keep_default_na=False)
    annotations = pd.read_csv(dataset / "annotations.csv", dtype=str, keep_default_na=False)
    paths = [Path(p) if Path(p).is_absolute() else dataset / p for p in tracks["path"]]
    return tracks["track_id"].tolist(), paths, sorted(annotations["label"].unique())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="dataset directory (tracks.csv, annotations.csv)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument(
        "--prompt", default=PROMPT, help="text of a label; {label} is replaced by the label"
    )
    parser.add_argument(
        "--ckpt", help="a local CLAP checkpoint (default: the package's default download)"
    )
    parser.add_argument(
        "--amodel",
        default="HTSAT-tiny",
        help="audio model of the checkpoint (HTSAT-base for the music checkpoints)",
    )
    parser.add_argument("--batch", type=int, default=16, help="audio files per call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import laion_clap
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)  # the excerpt of a file longer than 10 s is drawn with numpy
    torch.manual_seed(args.seed)
    model = laion_clap.CLAP_Module(enable_fusion=False, amodel=args.amodel)
    if args.ckpt:
        model.load_ckpt(args.ckpt)
    else:
        # the package's default checkpoint (630k + AudioSet, non-fusion), downloaded once
        model.load_ckpt()

    track_ids, paths, labels = read_dataset(args.dataset)
    with torch.no_grad():
        audio = [
            model.get_audio_embedding_from_filelist(
                x=[str(p) for p in paths[i : i + args.batch]], use_tensor=False
            )
            for i in range(0, len(paths), args.batch)
        ]
        text = model.get_text_embedding(
            [args.prompt.format(label=label) for label in labels], use_tensor=False
        )
    np.savez(
        args.out,
        track_ids=np.asarray(track_ids, dtype=str),
        label_names=np.asarray(labels, dtype=str),
        track_embeddings=np.concatenate(audio).astype(np.float32),  # (n, 512)
        label_embeddings=np.asarray(text, dtype=np.float32),
    )  # (m, 512)
    print(
        f"wrote {args.out}: {len(track_ids)} tracks, {len(labels)} labels, prompt {args.prompt!r}"
    )


if __name__ == "__main__":
    main()

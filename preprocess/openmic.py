"""OpenMIC-2018 instrument annotations: openmic-2018.npz (Y_true (n, 20) likelihoods, Y_mask (n, 20)
bool, sample_key (n,) "<6-digit FMA id>_<start ms>", rows sorted by sample_key) + class-map.json
(docs/formats.md). We never unpickle: a sample_key stored as an object array is recovered from the
archive's partitions/*.csv (one key per line, together every clip), sorted like the rows. The demo
writes this format too (`write_openmic`)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_dir import DatasetError, check_finite
from fileio import atomic_write, atomic_write_text

NPZ_FILE = "openmic-2018.npz"
CLASS_MAP_FILE = "class-map.json"


@dataclass(frozen=True)
class OpenMIC:
    sample_keys: np.ndarray  # (n,) str
    y_true: np.ndarray  # (n, K) float32 likelihoods
    y_mask: np.ndarray  # (n, K) bool
    instruments: list[str]  # K names in column (class-map index) order


def read_class_map(path) -> list[str]:
    """class-map.json ({"accordion": 0, ...}) -> instrument names ordered by index."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"OpenMIC class map {path} does not exist (expected in the openmic-2018 folder)."
        )
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"OpenMIC class map {path} is not valid JSON: {exc}") from None
    indices = list(mapping.values()) if isinstance(mapping, dict) else [None]
    if not all(type(i) is int for i in indices) or sorted(indices) != list(range(len(indices))):
        raise DatasetError(
            f"OpenMIC class map {path}: must map names to indices 0..{len(indices) - 1} without "
            "gaps."
        )
    return sorted(mapping, key=mapping.get)


def _keys_from_partitions(openmic_dir: Path, n_rows: int, npz_path: Path) -> np.ndarray:
    folder = openmic_dir / "partitions"
    keys = {key for csv in folder.glob("*.csv") for key in csv.read_text(encoding="utf-8").split()}
    if len(keys) != n_rows:
        raise DatasetError(
            f"{npz_path}: sample_key is an object array (we do not unpickle) and the partition "
            f"files under {folder} list {len(keys)} distinct keys for {n_rows} rows. Keep "
            "partitions/ "
            "complete (split01_train.csv + split01_test.csv), or re-save sample_key with "
            ".astype(str)."
        )
    return np.array(sorted(keys))


def _is_object_array(archive, key: str) -> bool:
    """True when `key` of an open npz is an object array (its .npy header says dtype '|O'), without
    loading it."""
    with archive.zip.open(f"{key}.npy") as member:
        major, _ = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        return read_header(member)[2].hasobject


def load_openmic(openmic_dir) -> OpenMIC:
    """Y_true, Y_mask, sample_key and the class map of an OpenMIC-2018 folder, checked (never
    unpickles)."""
    npz_path = Path(openmic_dir) / NPZ_FILE
    if not npz_path.is_file():
        raise DatasetError(
            f"OpenMIC annotations {npz_path} do not exist; --openmic must be the openmic-2018 "
            "folder."
        )
    instruments = read_class_map(npz_path.parent / CLASS_MAP_FILE)
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{npz_path} is not a readable .npz file: {exc}") from None
    with archive:
        if missing := [k for k in ("Y_true", "Y_mask", "sample_key") if k not in archive.files]:
            raise DatasetError(
                f"{npz_path} lacks array(s) {', '.join(missing)} (has {', '.join(archive.files)})."
            )
        if _is_object_array(archive, "Y_true") or _is_object_array(archive, "Y_mask"):
            raise DatasetError(
                f"{npz_path}: Y_true or Y_mask is an object array, which we never unpickle; "
                "re-save "
                "them as numeric arrays."
            )
        y_true = check_finite(archive["Y_true"], f"{npz_path}: Y_true")  # (n, K) float32
        y_mask = np.asarray(archive["Y_mask"]).astype(bool)
        if _is_object_array(archive, "sample_key"):  # reading it would need pickle
            sample_keys = _keys_from_partitions(npz_path.parent, len(y_true), npz_path)
        else:
            sample_keys = np.asarray(archive["sample_key"]).astype(str)
    if y_true.shape != y_mask.shape or y_true.ndim != 2 or sample_keys.shape != (len(y_true),):
        raise DatasetError(
            f"{npz_path}: shapes Y_true {y_true.shape}, Y_mask {y_mask.shape}, sample_key "
            f"{sample_keys.shape} do not match (n, K), (n, K), (n,)."
        )
    if y_true.shape[1] != len(instruments):
        raise DatasetError(
            f"{npz_path}: {y_true.shape[1]} instrument columns, {len(instruments)} in the class "
            "map."
        )
    return OpenMIC(sample_keys=sample_keys, y_true=y_true, y_mask=y_mask, instruments=instruments)


def write_openmic(openmic_dir, sample_keys, y_true, y_mask, instruments) -> None:
    """Write annotations in OpenMIC-2018's layout (string sample_key, no pickle), rows sorted by
    sample_key."""
    keys = np.asarray(sample_keys).astype(str)
    order = np.argsort(keys, kind="stable")
    arrays = {
        "Y_true": np.asarray(y_true, dtype=np.float32)[order],
        "Y_mask": np.asarray(y_mask, dtype=bool)[order],
        "sample_key": keys[order],
    }
    atomic_write(Path(openmic_dir) / NPZ_FILE, lambda tmp: np.savez_compressed(tmp, **arrays))
    atomic_write_text(
        Path(openmic_dir) / CLASS_MAP_FILE,
        json.dumps({name: index for index, name in enumerate(instruments)}, indent=4) + "\n",
    )


def track_id_from_sample_key(sample_key: str) -> str:
    """'000046_3840' -> '46': the FMA track id (integer, as a string) of an OpenMIC sample key."""
    prefix = str(sample_key).split("_", 1)[0]
    if not (prefix.isascii() and prefix.isdecimal()):
        raise DatasetError(
            f"OpenMIC sample_key {sample_key!r} does not start with a numeric FMA track id."
        )
    return str(int(prefix))

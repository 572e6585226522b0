"""Reader for OpenMIC-2018 instrument annotations (openmic-2018.npz + class-map.json).

Facts (../shared/DATASETS.md): `openmic-2018.npz` holds `X` (VGGish, unused here), `Y_true` (n, 20) likelihoods,
`Y_mask` (n, 20) bool and `sample_key` (n,) strings `<6-digit FMA id>_<start ms>`, rows sorted by sample_key,
columns in class-map order. In the published file `sample_key` may be stored as a NumPy *object* array, which NumPy
can only read by unpickling. We never unpickle: when `sample_key` cannot be read with allow_pickle=False, the keys
are recovered from the archive's own partition files (`partitions/*.csv`, one sample_key per line; together they list
every clip), sorted, exactly as the npz rows are.

The demo corpus writes its per-track instrument annotations in this same format (`write_openmic`), so both the demo
and FMA build their side information through `load_openmic` + `preprocess.side_info.instrument_side_info`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_dir import DatasetError

NPZ_FILE = "openmic-2018.npz"
CLASS_MAP_FILE = "class-map.json"
PARTITIONS_DIR = "partitions"


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
        raise DatasetError(f"OpenMIC class map {path} does not exist (expected in the openmic-2018 folder).")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"OpenMIC class map {path} is not valid JSON: {exc}") from None
    indices = sorted(mapping.values())
    if indices != list(range(len(mapping))):
        raise DatasetError(f"OpenMIC class map {path}: indices must be 0..{len(mapping) - 1} without gaps.")
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]


def _keys_from_partitions(openmic_dir: Path, n_rows: int, npz_path: Path) -> np.ndarray:
    folder = openmic_dir / PARTITIONS_DIR
    keys: set[str] = set()
    for csv in sorted(folder.glob("*.csv")):
        keys.update(line.strip() for line in csv.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(keys) != n_rows:
        raise DatasetError(
            f"{npz_path}: sample_key is stored as a pickled object array, which we do not unpickle, and the "
            f"partition files under {folder} list {len(keys)} distinct keys for {n_rows} rows. Keep the archive's "
            "partitions/ folder complete (split01_train.csv + split01_test.csv), or re-save the npz with "
            "sample_key as a string array: np.savez(..., sample_key=sample_key.astype(str))."
        )
    return np.array(sorted(keys))


def _stored_as_object_array(archive, key: str) -> bool:
    """True when `key` of an open npz is an object array (its .npy header says dtype '|O'), without loading it."""
    with archive.zip.open(f"{key}.npy") as member:
        major, _ = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(member)
    return dtype.hasobject


def load_openmic(openmic_dir) -> OpenMIC:
    """Read Y_true, Y_mask, sample_key and the class map from an OpenMIC-2018 folder (never unpickles)."""
    openmic_dir = Path(openmic_dir)
    npz_path = openmic_dir / NPZ_FILE
    if not npz_path.is_file():
        raise DatasetError(f"OpenMIC annotations {npz_path} do not exist; --openmic must be the openmic-2018 folder.")
    instruments = read_class_map(openmic_dir / CLASS_MAP_FILE)
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{npz_path} is not a readable .npz file: {exc}") from None
    with archive:
        missing = [k for k in ("Y_true", "Y_mask", "sample_key") if k not in archive.files]
        if missing:
            raise DatasetError(f"{npz_path} lacks array(s) {', '.join(missing)} (has {', '.join(archive.files)}).")
        y_true = np.asarray(archive["Y_true"], dtype=np.float32)
        y_mask = np.asarray(archive["Y_mask"]).astype(bool)
        if _stored_as_object_array(archive, "sample_key"):  # reading it would need pickle
            sample_keys = _keys_from_partitions(openmic_dir, len(y_true), npz_path)
        else:
            sample_keys = np.asarray(archive["sample_key"]).astype(str)
    if y_true.shape != y_mask.shape or y_true.ndim != 2 or len(sample_keys) != len(y_true):
        raise DatasetError(
            f"{npz_path}: inconsistent shapes Y_true {y_true.shape}, Y_mask {y_mask.shape}, sample_key {sample_keys.shape}."
        )
    if y_true.shape[1] != len(instruments):
        raise DatasetError(f"{npz_path}: {y_true.shape[1]} instrument columns but the class map names {len(instruments)}.")
    return OpenMIC(sample_keys=sample_keys, y_true=y_true, y_mask=y_mask, instruments=instruments)


def write_openmic(openmic_dir, sample_keys, y_true, y_mask, instruments) -> None:
    """Write annotations in OpenMIC-2018's layout (string sample_key, no pickle), rows sorted by sample_key."""
    openmic_dir = Path(openmic_dir)
    openmic_dir.mkdir(parents=True, exist_ok=True)
    keys = np.asarray(sample_keys).astype(str)
    order = np.argsort(keys, kind="stable")
    np.savez_compressed(
        openmic_dir / NPZ_FILE,
        Y_true=np.asarray(y_true, dtype=np.float32)[order],
        Y_mask=np.asarray(y_mask, dtype=bool)[order],
        sample_key=keys[order],
    )
    class_map = {name: index for index, name in enumerate(instruments)}
    (openmic_dir / CLASS_MAP_FILE).write_text(json.dumps(class_map, indent=4) + "\n", encoding="utf-8")


def track_id_from_sample_key(sample_key: str) -> str:
    """'000046_3840' -> '46': the FMA track id (integer, as a string) of an OpenMIC sample key."""
    prefix = str(sample_key).split("_", 1)[0]
    if not (prefix.isascii() and prefix.isdecimal()):
        raise DatasetError(f"OpenMIC sample_key {sample_key!r} does not start with a numeric FMA track id.")
    return str(int(prefix))

"""File safety, defined once: atomic writes, one writer per output folder, and what a command may
delete.

Every command of the project writes through these helpers:

* `atomic_write(path, write)` / `atomic_write_text` / `write_json`: `path` never holds a partial
  file. The content goes to a hidden temporary sibling that is renamed over `path` only when
  complete.
* `output_lock(folder, what)`: one writer per output folder. A second process that asks for the
  same folder is refused at once with a message naming the folder (the OS releases the lock when
  its holder dies, even by kill -9, so a folder is never locked for good).
* `claim_folder(folder, owner)` / `is_ours(folder, owner)`: the rule for deleting. A command deletes
  or overwrites only inside folders that carry its marker file (`.zsl-music.json`, written when the
  command created the folder, or when it found it missing or empty). A non-empty folder without the
  marker belongs to the user: the command refuses it and names it. `remove_temporaries` deletes, in
  such a folder, only the temporaries that `atomic_write` left behind when a process was killed.
* A write the system refuses (a read-only folder, a full disk) is one OutputError naming the folder
  or file (`cannot_write`); `resolved(path, flag)` turns a symbolic link loop into one naming the
  flag.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

MARKER_FILE = ".zsl-music.json"
LOCK_FILE = ".lock"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# atomic_write's temporaries: .<stem>.<random>.tmp<suffix>
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]+\.tmp(\.[^.]+)?")


class OutputError(ValueError):
    """An output folder that this command may not use (not ours, in use by another process, not
    writable, on a full disk), or a path that does not resolve (a symbolic link loop)."""


def cannot_write(path, exc: OSError) -> OutputError:
    """The one line for a write the system refused: a full disk, else a folder not writable."""
    if exc.errno in DISK_FULL:
        return OutputError(
            f"no space left on the device writing {path}: free some space and rerun; what was "
            "finished is kept and the rerun goes on from it."
        )
    return OutputError(
        f"cannot write into {path} ({exc.strerror or exc}): the folder is read-only or not a "
        "folder. Choose a writable location."
    )


def resolved(path, flag: str) -> Path:
    """`path` absolute, with its symbolic links resolved; OutputError naming `flag` for a loop."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11: RuntimeError("Symlink loop from ...")
        raise OutputError(
            f"{flag} {path}: cannot be resolved ({exc}): a symbolic link loop? Fix the link or "
            "pass another path."
        ) from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> Path:
    """Call `write(tmp_path)` to produce the file, then rename it to `path` (never a partial
    `path`).

    `write` receives a temporary path in the same folder (same file system, so the rename is atomic)
    whose name ends with the target's suffix (Keras and h5py look at suffixes). On any error the
    temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as exc:
        raise cannot_write(path.parent, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp creates 0600; give the file ordinary permissions
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise cannot_write(path, exc) from None
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write a UTF-8 text file atomically (newlines written as given)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write)


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def output_lock(folder, what: str = "this folder"):
    """Hold an exclusive lock on `folder` (created) while the block runs; refuse at once if another
    process has it.

    `what` names the job in the message, e.g. "training run" -> "another training run is writing
    <folder> ...".
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: choose another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")
    except OSError as exc:
        raise cannot_write(folder, exc) from None
    try:
        try:
            import fcntl
        # no flock on this platform: one writer per folder is then the user's job
        except ImportError:
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputError(
                    f"another {what} is writing {folder} (its lock {folder / LOCK_FILE} is held): "
                    "wait for it to finish or use another folder."
                ) from None
        yield folder
    finally:
        handle.close()


def is_ours(folder, owner: str) -> bool:
    """True when `folder` carries the marker of `owner` (a command name such as "demo")."""
    marker = Path(folder) / MARKER_FILE
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("owner") == owner
    except (OSError, ValueError, AttributeError):
        return False


def claim_folder(folder, owner: str, hint: str = "") -> Path:
    """Make `folder` an output folder of `owner`: create it (or take it when empty) and mark it;
    refuse others.

    A folder that exists, is not empty and has no marker of `owner` was not made by this command:
    raise OutputError naming it, and touch nothing. `hint` is appended to the message (e.g. which
    flag to change).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder. {hint}".strip())
    if contents(folder) and not is_ours(folder, owner):
        raise OutputError(
            f"{folder} is not empty and was not made by `{owner}` (no {MARKER_FILE} marker): "
            f"refusing to write into it. Choose a new or empty folder. {hint}".strip()
        )
    if not is_ours(folder, owner):  # atomic_write makes the folder
        write_json(folder / MARKER_FILE, {"owner": owner})
    return folder


def contents(folder) -> list[Path]:
    """What `folder` holds besides our marker and lock ([] when it does not exist)."""
    folder = Path(folder)
    return (
        [p for p in folder.iterdir() if p.name not in (MARKER_FILE, LOCK_FILE)]
        if folder.is_dir()
        else []
    )


def remove_temporaries(*folders) -> None:
    """Delete the temporaries that `atomic_write` left in `folders` (a killed process); call it in
    folders of ours only, while holding their lock."""
    for folder in folders:
        for path in Path(folder).glob(".*.tmp*"):
            if TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)

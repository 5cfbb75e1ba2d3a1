"""Files written whole or not at all, and JSON records read back with errors that name the file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loraops.errors import LoraopsError, WriteError


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """A refused write in the block (a full disk...) becomes a WriteError naming the file the system named,
    or else `path`, and `what` was being written: a bare `[Errno 28]` says neither."""
    try:
        yield
    except OSError as exc:
        raise WriteError(exc.filename or path, what, exc) from None


def write_text_atomic(path: Path, text: str, what: str = "this file") -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise WriteError(path, what, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide records from teammates
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, what, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overwrite_in_place(path: Path, text: str) -> None:
    """Rewrite an existing file in the blocks it already holds: what still works on a full disk, where a new
    file cannot be made. Not atomic; only for a record that must not keep saying something false."""
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text)
        fh.truncate()


def ensure_folder(path: Path, what: str) -> None:
    """Create the folder `what` names (e.g. `output_dir=x`), or say why it cannot be one."""
    if path.exists() and not path.is_dir():
        raise LoraopsError(f"{what} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LoraopsError(f"{what}: cannot create it ({exc.strerror})") from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a broken or non-object file is the user's to fix, not a crash."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoraopsError(f"{path}: cannot read this JSON record ({exc}); restore or delete it") from None
    if not isinstance(data, dict):
        raise LoraopsError(f"{path}: expected a JSON object, got {type(data).__name__}; restore or delete it")
    return data


_STAGING_KINDS = ("tmp", "old")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_folder_leftovers(dest: Path) -> None:
    """Undo what an interrupted swap_in_folder of `dest` (a dead process) left next to it."""
    for kind in _STAGING_KINDS:
        for path in dest.parent.glob(f".{dest.name}.{kind}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not dest.exists():
                os.replace(path, dest)  # it died between the two renames: the old copy is still whole
            else:
                shutil.rmtree(path, ignore_errors=True)


def swap_in_folder(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the complete `tmp`; the old copy is deleted only once the new one is in place."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)  # rename cannot replace a non-empty folder, so move the old one aside first
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old.exists():
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def link_or_copy(source: Path, dest: Path) -> None:
    """`dest` with the bytes of `source`: a hard link where the filesystem allows (no second copy of a large
    file), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)

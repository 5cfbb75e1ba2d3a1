"""Run folders: creation, config snapshot, manifest, metrics and the `latest` link."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

LATEST = "latest"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|access_key|api_key|credential)", re.IGNORECASE)
REDACTED = "<redacted>"
_TRACKED_LIBRARIES = ("loraops", "torch", "transformers", "peft", "accelerate", "datasets", "hydra-core", "omegaconf")


def create_run_dir(output_dir: str | Path, now: datetime | None = None) -> Path:
    """Make outputs/runs/YYYY-MM-DD_HH-MM-SS; runs started in the same second get a suffix."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1, 1000):
        candidate = root / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            candidate.mkdir()  # atomic: exactly one concurrent caller wins each name
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def redact(value: Any) -> Any:
    """Replace the values of secret-looking keys, recursively."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide run records from teammates
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def update_latest(output_dir: str | Path, run_dir: Path) -> Path:
    """Point output_dir/latest at run_dir, atomically (a rename over the old link)."""
    root = Path(output_dir)
    link = root / LATEST
    tmp = root / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)  # relative, so the outputs folder can be moved
    os.replace(tmp, link)
    return link


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain")) if commit else None}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions

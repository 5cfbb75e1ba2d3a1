"""Where a run came from: the git commit of the code and the versions of the libraries."""

from __future__ import annotations

import subprocess
from importlib import metadata
from typing import Any

TRACKED_LIBRARIES = ("loraops", "torch", "transformers", "peft", "accelerate", "datasets", "hydra-core", "omegaconf")


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
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions

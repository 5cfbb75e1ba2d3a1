"""What `loraops remote push` sends, and what it may delete on the server.

Git decides what belongs to the project: `git ls-files --cached --others --exclude-standard` is what git would
commit (tracked files, and new files that no .gitignore, .git/info/exclude or global excludes file ignores),
read with git's own rules rather than re-implemented in rsync filters. A push deletes on the server only files
an earlier push sent that the project no longer has: the list of what was sent is kept in the folder's marker.

Outside a git repository, rsync's reading of every .gitignore decides instead (close to git's, not the same in
corner cases: trailing spaces, .git/info/exclude), and the push says so.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path, PurePosixPath

from loraops.remote.commands import PUSH_EXCLUDES

MARKER_NOTE = (
    "A copy of a loraops project, kept in sync by `loraops remote push`: the files below are the ones the last "
    "push sent; a later push deletes those the project no longer has, and nothing else."
)


def project_files(project: Path, include_ignored: bool = False) -> list[str] | None:
    """The project's files, relative to it, as git sees them; None when `project` is not in a git repository.

    Never a `.env*` file (at any depth) nor local state (PUSH_EXCLUDES), even one that git tracks."""
    excludes = [f"--exclude={pattern}" for pattern in PUSH_EXCLUDES]
    standard = [] if include_ignored else ["--exclude-standard"]
    argv = ["git", "-C", str(project), "ls-files", "-z", "--cached", "--others", *standard, *excludes]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git here
    if done.returncode != 0:
        return None  # not a git repository
    names = sorted({name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name})
    return [n for n in names if _sendable(n) and ((project / n).is_symlink() or (project / n).is_file())]


def _sendable(name: str) -> bool:
    """Matches none of PUSH_EXCLUDES (rsync's syntax: `/` anchors to the top, a trailing `/` means a folder),
    so a secret or local state is never sent, whatever git says about it."""
    parts = PurePosixPath(name).parts
    for pattern in PUSH_EXCLUDES:
        anchored, folder, body = pattern.startswith("/"), pattern.endswith("/"), pattern.strip("/")
        candidates = parts[:-1] if folder else parts[-1:]
        if anchored:
            candidates = candidates[:1] if folder or len(parts) == 1 else ()
        if any(fnmatch.fnmatchcase(part, body) for part in candidates):
            return False
    return not any(part.startswith(".env") for part in parts)


def marker_text(files: list[str]) -> str:
    return json.dumps({"note": MARKER_NOTE, "files": files}, indent=1) + "\n"


def sent_before(marker: str) -> list[str]:
    """The files the last push sent, from the marker's text; none for a marker an older loraops wrote."""
    try:
        files = json.loads(marker).get("files", [])
    except (ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and _inside(f)] if isinstance(files, list) else []


def _inside(name: str) -> bool:
    """A relative path that stays inside the project: a marker edited on the server cannot aim a deletion out."""
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts

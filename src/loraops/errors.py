"""Errors a user can fix; the CLI turns them into one message and exit status 2."""

from __future__ import annotations

from errno import EDQUOT, ENOSPC
from os import PathLike

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT, TERMINATED_EXIT = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class LoraopsError(Exception):
    """A problem with the user's input (config, data, paths), not a bug in loraops."""


class ConfigError(LoraopsError):
    """The configuration is invalid."""


class DataError(LoraopsError):
    """A data file is invalid; the message names file, line and problem."""

    def __init__(self, path: str | PathLike[str], line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        row = self.path.endswith((".parquet", ".csv"))  # tables are numbered by row, not by line
        where = self.path if line is None else f"{self.path}, row {line}" if row else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


class DataErrors(DataError):
    """Several bad records at once: the first ones named, each on its line, the rest counted."""

    def __init__(self, errors: list[DataError], total: int) -> None:
        first = errors[0]
        super().__init__(first.path, first.line, first.problem)
        rest = [f"... and {total - len(errors)} more bad records"] if total > len(errors) else []
        self.args = ("\n".join([*(str(e) for e in errors), *rest]),)


class Problems:
    """Bad records gathered while reading, so a user fixes them in one go rather than one run at a time."""

    SHOWN = 10

    def __init__(self) -> None:
        self.errors: list[DataError] = []
        self.total = 0

    def add(self, error: DataError) -> None:
        self.total += 1
        if len(self.errors) < self.SHOWN:
            self.errors.append(error)

    def raise_any(self) -> None:
        if self.total == 1:
            raise self.errors[0]
        if self.total:
            raise DataErrors(self.errors, self.total)


class WriteError(LoraopsError):
    """The system refused a write (a full disk, a quota, permissions); the message names what and where."""

    def __init__(self, path: str | PathLike[str], what: str, exc: OSError) -> None:
        self.path, self.errno = str(path), exc.errno
        advice = "; the disk is full: free space and try again" if exc.errno in (ENOSPC, EDQUOT) else ""
        super().__init__(f"{self.path}: cannot write {what} ({exc.strerror or exc}){advice}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, batch schedulers): handled like Ctrl-C, so runs record `interrupted`."""

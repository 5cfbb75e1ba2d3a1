"""`loraops report`: one self-contained HTML page per run, or for several runs side by side.

    artifacts/reports/<run>.html                  one run
    artifacts/reports/compare-<run>-<run>.html    several

data.py collects what the page shows from the run folders and the metrics folder, plots.py draws
the figures as inline SVG, html.py renders the page. The page fetches nothing: it opens offline.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from html import escape
from pathlib import Path

from loraops import paths
from loraops.atomic import ensure_folder, write_text_atomic
from loraops.paths import LATEST, RUNS_DIR
from loraops.report.data import collect, resolve_runs
from loraops.runs import RunDir
from loraops.secrets import REDACTED, secret_values

_MAX_NAME = 120


def build_report(
    runs: list[str],
    artifacts_dir: str | Path,
    metrics_dir: str | Path | None = None,
    samples: int = 8,
    runs_dir: str | Path = RUNS_DIR,
) -> Path:
    """Write the report of `runs` (run folders, names or `latest`) under <artifacts_dir>/reports/; its path."""
    from loraops.report.html import render

    found = resolve_runs(runs or [str(Path(runs_dir) / LATEST)], runs_dir)
    data = collect(found, metrics_dir or paths.metrics_dir(artifacts_dir), samples)
    page = without_secrets(render(data), secret_values(os.environ).values())
    folder = paths.reports_dir(artifacts_dir)
    ensure_folder(folder, f"artifacts_dir={artifacts_dir}: {folder.name}")
    path = folder / report_name(found)
    write_text_atomic(path, page)
    return path


def without_secrets(page: str, secrets: Iterable[str]) -> str:
    """Records are redacted when written; this also catches a secret that reached a prediction or a path."""
    for secret in secrets:
        for form in {secret, escape(secret)}:  # as written, and as the page escaped it
            page = page.replace(form, escape(REDACTED))
    return page


def report_name(runs: list[RunDir]) -> str:
    """<run>.html, or compare-<run>-<run>.html; a long list of runs is named by a hash instead."""
    if len(runs) == 1:
        return f"{runs[0].name}.html"
    name = "compare-" + "-".join(run.name for run in runs)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"compare-{runs[0].name}-and-{len(runs) - 1}-more-{digest}"
    return f"{name}.html"

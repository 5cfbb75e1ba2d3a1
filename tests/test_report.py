"""`loraops report`: what the page shows, that it escapes model text, fetches nothing, and renders in chromium.

Runs are made with make_run and their eval records through MetricsRecords; the comparison is the real
`compare()`'s, so the report reads what `loraops compare` writes. One test trains the tiny model and
runs the console command on the result; one opens the page in Debian's chromium through Playwright.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, REPO, fake_metrics, make_run

from loraops.cli import main
from loraops.config import CompareConfig
from loraops.eval.compare import compare
from loraops.eval.records import MetricsRecords
from loraops.report import build_report
from loraops.report.data import collect, config_differences, resolve_runs, score_table
from loraops.runs import RunDir

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "tests" / "artifacts"  # git-ignored; CI keeps it as the test's artifact
INJECTION = "<script>alert('pwned')</script><img src=x onerror=alert(2)>"
CANARY = "hf_" + "ReportCanary0123456789abcdefXYZ"  # split: no token-shaped literal in git

HISTORY = [
    {"step": s, "loss": round(2.4 * 0.88**s, 4), "learning_rate": 5e-4 * min(1.0, s / 2) * (1 - (s - 1) / 20)}
    for s in range(1, 21)
]
TRAIN_METRICS = {
    "train_loss": 1.1,
    "first_logged_loss": HISTORY[0]["loss"],
    "final_logged_loss": HISTORY[-1]["loss"],
    "epoch_train_loss": [1.6, 0.5],
    "loss_history": HISTORY,
    "global_steps": 20,
    "epochs_completed": 2.0,
    "runtime_s": 12.5,
    "train_tokens": 5000,
    "tokens_per_second": 400.0,
    "precision": "fp32",
    "device": "CPU",
    "data": {"examples": 80, "truncated": 0},
    "validation": {
        "select_metric": "loss",
        "higher_is_better": False,
        "stopped_early": None,
        "seconds": 2.0,
        "best": {"step": 20, "epoch": 2.0, "value": 0.41},
        "curve": [
            {"step": 10, "epoch": 1.0, "loss": 0.72, "exact_match": 25.0, "seconds": 1.0},
            {"step": 20, "epoch": 2.0, "loss": 0.41, "exact_match": 50.0, "seconds": 1.0},
        ],
    },
}
MANIFEST = {
    "model_name": "default",
    "resolved_model": "models/SmolLM2-135M-Instruct",
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
    "data": {
        "source": {"type": "lakefs", "repository": "sheets", "ref": "main", "commit_id": "c0ffee42c0ffee42"},
        "files": [{"name": "train.jsonl", "path": "data/train.jsonl", "sha256": "ab" * 32}],
        "dataset_sha256": "cd" * 32,
    },
    "validation": {"type": "file", "path": "data/eval/dev.jsonl", "sha256": "ef" * 32},
    "environment": {"device": "cpu", "device_name": "CPU (x86_64)", "precision": "fp32"},
    "libraries": {"torch": "2.13.0+cpu", "peft": "0.21.2"},
}


def make_report_run(tmp_path: Path, name: str = "2026-03-04_05-06-07", **kwargs: Any) -> Path:
    kwargs = {"metrics": TRAIN_METRICS, "manifest": MANIFEST, "config": {"lr": 5e-4, "lora_r": 16}} | kwargs
    return make_run(tmp_path / "runs", name, **kwargs)


def evaluated_and_compared(tmp_path: Path, run: Path, wrong_answer: str = INJECTION) -> Path:
    """The run 75% right on test and dev, the base model right once per split, and `compare` run on them."""
    metrics = tmp_path / "artifacts" / "metrics"
    right = {"test": [i % 4 != 0 for i in range(16)], "dev": [i % 4 != 1 for i in range(8)]}
    fake_metrics(metrics, run.name, right, wrong_answer=wrong_answer)
    fake_metrics(metrics, "baseline/default", {"test": [i == 0 for i in range(16)], "dev": [i == 1 for i in range(8)]})
    compare(
        CompareConfig(
            run=str(run),
            against="base",
            metrics_dir=str(metrics),
            bootstrap_resamples=200,
            reference_file=str(tmp_path / "reference.json"),
        )
    )
    return metrics


def test_collect_reads_curves_scores_comparison_and_lineage(tmp_path: Path) -> None:
    run = make_report_run(tmp_path)
    metrics = evaluated_and_compared(tmp_path, run)
    data = collect(resolve_runs([str(run)]), metrics, samples=5)
    report = data.runs[0]
    assert report.name == run.name and report.status == "finished"
    assert report.training.loss[0] == (1, HISTORY[0]["loss"]) and len(report.training.learning_rate) == 20
    assert report.training.validation_series("exact_match") == [(10, 25.0), (20, 50.0)]
    assert report.training.best == {"step": 20, "epoch": 2.0, "value": 0.41}
    ev = report.evaluation
    assert ev.splits == ["test", "dev"] and ev.counts == {"test": 16, "dev": 8}
    assert [len(ev.samples[s]) for s in ev.splits] == [5, 5] and ev.scores["test"]["exact_match"] == 75.0
    assert ev.comparison is not None and ev.comparison["verdict"] == "IMPROVED" and ev.todo == [] and not ev.stale
    assert [len(ev.comparison["flips"]["test"][k]) for k in ("fixed", "broken")] == [12, 1]
    lineage = {k: dict(rows) for k, rows in report.lineage.items()}
    assert lineage["model and code"]["git commit"].endswith("(uncommitted changes)")
    assert lineage["data"]["source: commit_id"] == "c0ffee42c0ffee42" and lineage["data"]["dataset sha256"] == "cd" * 32
    assert lineage["environment and libraries"]["peft"] == "0.21.2"


def test_page_escapes_model_text_has_every_section_and_fetches_nothing(tmp_path: Path) -> None:
    run = make_report_run(tmp_path)
    evaluated_and_compared(tmp_path, run)
    path = build_report([str(run)], tmp_path / "artifacts")
    assert path == tmp_path / "artifacts" / "reports" / f"{run.name}.html"
    page = path.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page  # shown as text, in flips and samples
    tags = _tags(page)
    assert not {"script", "img", "link", "iframe", "object", "embed"} & {tag for tag, _ in tags}
    assert not [(tag, a) for tag, attrs in tags for a in attrs if a.startswith("on")]  # no event handlers
    links = [v for _, attrs in tags for a, v in attrs.items() if a in ("src", "href", "xlink:href", "action")]
    assert links and all(v.startswith("#") for v in links)  # in-page anchors only
    assert not re.search(r"@import|url\(\s*[\"']?\s*(?!#)", page)  # CSS fetches nothing either
    for section in ("training", "evaluation", "verdict", "examples", "lineage"):
        assert f'id="r1-{section}"' in page
    assert page.count('<svg class="plot"') == 2  # the training curves and the deltas
    assert "IMPROVED" in page and "12 fixed" in page and "c0ffee42c0ffee42" in page and "cd" * 32 in page


def test_a_run_never_evaluated_or_compared_says_which_command_fills_the_gap(tmp_path: Path) -> None:
    run = make_report_run(tmp_path)
    page = build_report([str(run)], tmp_path / "artifacts").read_text(encoding="utf-8")
    assert "Not evaluated yet" in page and "No verdict" in page and f"loraops eval model={run}" in page
    assert page.count('<svg class="plot"') == 1  # the training curves still show

    fake_metrics(tmp_path / "artifacts" / "metrics", run.name, {"test": [True, False]})
    page = build_report([str(run)], tmp_path / "artifacts").read_text(encoding="utf-8")
    assert "Evaluated but never compared" in page and f"loraops compare run={run}" in page
    assert "the first 2 of 2 predictions" in page


def test_a_comparison_older_than_the_eval_is_flagged(tmp_path: Path) -> None:
    run = make_report_run(tmp_path)
    metrics = evaluated_and_compared(tmp_path, run)
    split = MetricsRecords.of(metrics, run.name).split_path("dev")
    later = MetricsRecords.of(metrics, run.name).comparison_path.stat().st_mtime + 60
    os.utime(split, (later, later))
    data = collect(resolve_runs([str(run)]), metrics)
    assert data.runs[0].evaluation.stale == ["dev"] and data.runs[0].evaluation.todo == [f"loraops compare run={run}"]


def test_run_without_training_metrics_still_reports(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "2026-03-04_05-06-07", status="running")
    page = build_report([str(run)], tmp_path / "artifacts").read_text(encoding="utf-8")
    assert "No training curves" in page and "status <b>running</b>" in page and '<svg class="plot"' not in page


def test_learning_rate_of_older_runs_comes_from_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    old = {**TRAIN_METRICS, "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in HISTORY]}
    run = make_report_run(tmp_path, metrics=old)
    with SummaryWriter(str(RunDir(run).logs_dir)) as writer:
        for h in HISTORY:
            writer.add_scalar("train/learning_rate", h["learning_rate"], h["step"])
    data = collect(resolve_runs([str(run)]), tmp_path / "metrics")
    assert [step for step, _ in data.runs[0].training.learning_rate] == list(range(1, 21))


def test_several_runs_side_by_side(tmp_path: Path) -> None:
    first = make_report_run(tmp_path)
    second = make_report_run(tmp_path, "2026-03-05_00-00-00", config={"lr": 1e-4, "lora_r": 16})
    metrics = evaluated_and_compared(tmp_path, first)
    fake_metrics(metrics, second.name, {"test": [True] * 4})
    data = collect(resolve_runs([str(first), str(second), str(first)]), metrics)  # a run named twice shows once
    assert [r.name for r in data.runs] == [first.name, second.name]
    assert config_differences(data.runs) == [("lr", ["0.0005", "0.0001"])]
    table = {(s, m): values for s, m, values in score_table(data.runs)}
    assert table[("test", "exact_match")] == [75.0, 100.0] and table[("dev", "exact_match")] == [75.0, None]

    path = build_report([str(first), str(second)], tmp_path / "artifacts")
    assert path.name == f"compare-{first.name}-{second.name}.html"
    page = path.read_text(encoding="utf-8")
    assert 'id="side-by-side"' in page and 'id="r1-training"' in page and 'id="r2-lineage"' in page
    assert page.count('<svg class="plot"') == 2 + 2 + 1  # overlay + scores, run 1: curves + deltas, run 2: curves


def test_cli_writes_the_report_and_refuses_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_report_run(tmp_path)
    assert main(["report", str(run), "--artifacts-dir", str(tmp_path / "a"), "--config-dir", str(CONFIGS)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'a' / 'reports' / run.name}.html"
    assert main(["report", str(tmp_path / "nope"), "--artifacts-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "loraops: error:" in err and "nope: no such run folder" in err and "Traceback" not in err


def test_dollar_signs_in_names_are_text_not_math(tmp_path: Path) -> None:
    first = make_report_run(tmp_path, "run-a$^$b")  # broken math for matplotlib, a plain name for a user
    second = make_report_run(tmp_path, "cost_$x")
    metrics = tmp_path / "artifacts" / "metrics"
    fake_metrics(metrics, first.name, {"price$_$split": [True, False, True], "test": [True]})
    fake_metrics(metrics, second.name, {"price$_$split": [False, False, True]})
    page = build_report([str(first), str(second)], tmp_path / "artifacts").read_text(encoding="utf-8")
    assert "run-a$^$b" in page and "price$_$split" in page


def test_no_secret_reaches_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", CANARY)
    manifest = {**MANIFEST, "data": {**MANIFEST["data"], "source": {"type": "hub", "revision": CANARY}}}
    run = make_report_run(tmp_path, manifest=manifest, config={"api_key": CANARY, "lr": 1e-4})
    evaluated_and_compared(tmp_path, run, wrong_answer=f"my token is {CANARY}")
    page = build_report([str(run)], tmp_path / "artifacts").read_text(encoding="utf-8")
    assert CANARY not in page and "&lt;redacted&gt;" in page


def test_console_command_reports_a_tiny_training_run(trained_run: Path, tmp_path: Path) -> None:
    run = RunDir(trained_run)
    assert all(h.learning_rate is not None for h in run.read_metrics().loss_history)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loraops",
            "report",
            "--artifacts-dir",
            str(tmp_path / "a"),
            "--config-dir",
            str(CONFIGS),
            str(trained_run.parent / "latest"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().removeprefix("report: "))
    assert path == tmp_path / "a" / "reports" / f"{run.name}.html"
    page = path.read_text(encoding="utf-8")
    assert 'aria-label="training curves: loss, learning rate"' in page and "Not evaluated yet" in page


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: Debian's chromium package (.ci/run installs it)"
)
def test_report_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    first = make_report_run(tmp_path)
    evaluated_and_compared(tmp_path, first)
    second = make_report_run(tmp_path, "2026-03-05_00-00-00", config={"lr": 1e-4})
    path = build_report([str(first), str(second)], tmp_path / "artifacts")
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            seen = _open_offline(browser, path, shot)
        finally:
            browser.close()
    assert seen["fetched"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert seen["plots"] == 5 and all(w > 200 and h > 100 and paths > 5 for w, h, paths in seen["boxes"])
    assert seen["injection_shown_as_text"] > 0
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def _tags(page: str) -> list[tuple[str, dict[str, str]]]:
    """Every start tag of the page with its attributes, as a browser's tokenizer sees them."""
    from html.parser import HTMLParser

    found: list[tuple[str, dict[str, str]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, {k: v or "" for k, v in attrs}))

    Tags().feed(page)
    return found


def _open_offline(browser: Any, path: Path, shot: Path) -> dict[str, Any]:
    """Load the page with every non-file request aborted; what it tried, what it said, what it drew."""
    seen: dict[str, Any] = {"fetched": [], "errors": [], "dialogs": []}
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(r: Any) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            seen["fetched"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else seen["fetched"].append(r.url))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    plots = page.locator("svg.plot")
    seen["plots"] = plots.count()
    seen["boxes"] = []
    for i in range(seen["plots"]):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box() if plot.is_visible() else None
        seen["boxes"].append((box["width"], box["height"], plot.locator("path").count()) if box else (0, 0, 0))
    seen["injection_shown_as_text"] = page.get_by_text("<script>alert('pwned')</script>", exact=False).count()
    page.screenshot(path=str(shot), full_page=True)
    return seen

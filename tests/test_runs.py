"""Run folders, the `latest` link and secret redaction."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from loraops.runs import REDACTED, create_run_dir, redact, update_latest


def test_runs_started_in_the_same_second_do_not_clash(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5)
    names = [create_run_dir(tmp_path, now).name for _ in range(3)]
    assert names == ["2026-01-02_03-04-05", "2026-01-02_03-04-05_2", "2026-01-02_03-04-05_3"]


def test_latest_is_a_relative_link_switched_in_place(tmp_path: Path) -> None:
    first, second = create_run_dir(tmp_path), create_run_dir(tmp_path)
    update_latest(tmp_path, first)
    link = update_latest(tmp_path, second)
    assert link.is_symlink() and os.readlink(link) == second.name
    assert link.resolve() == second.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, "latest"])


def test_secret_looking_keys_are_redacted() -> None:
    cfg = {"lr": 1, "hf_token": "hf_abc", "remote": {"SECRET_KEY": "s", "host": "h"}, "items": [{"api_key": "k"}]}
    assert redact(cfg) == {"lr": 1, "hf_token": REDACTED, "remote": {"SECRET_KEY": REDACTED, "host": "h"},
                           "items": [{"api_key": REDACTED}]}  # fmt: skip

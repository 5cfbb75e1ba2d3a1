#!/usr/bin/env python3
"""Print the configuration reference table (key, default, meaning) for the README, from the schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from loraops.config import TrainConfig, help_rows


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def reference_table() -> str:
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    for key, default, text in help_rows(TrainConfig):
        shown = _yaml_value(default)
        rows.append(f"| `{key}` | `{shown}` | {text.replace('|', '/')} |")
    return "\n".join(rows)


def update_readme(path: Path) -> None:
    """Replace the table between the config-reference markers in `path`."""
    text = path.read_text(encoding="utf-8")
    start = text.index("| key | default | what it does |")
    end = text.index("<!-- /config-reference -->")
    path.write_text(text[:start] + reference_table() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="update this README in place instead of printing")
    args = parser.parse_args()
    if args.write:
        update_readme(args.write)
    else:
        print(reference_table())

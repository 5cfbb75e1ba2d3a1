#!/usr/bin/env python3
"""Print the configuration reference table (key, default, meaning) for the README, from the schema."""

from __future__ import annotations

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


if __name__ == "__main__":
    print(reference_table())

#!/usr/bin/env python3
"""Print, or write into the README, the configuration reference tables (key, default, meaning),
generated from the typed schemas so the README cannot drift from the code.

    python scripts/config_reference.py                    # print the tables
    python scripts/config_reference.py --write README.md  # replace the marked blocks
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from loraops.config import CompareConfig, EvalConfig, TrainConfig, help_rows

SCHEMAS = {"train": TrainConfig, "eval": EvalConfig, "compare": CompareConfig}


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def reference_table(schema: type) -> str:
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    for key, default, text in help_rows(schema):
        rows.append(f"| `{key}` | `{_yaml_value(default)}` | {text.replace('|', '/')} |")
    return "\n".join(rows)


def block(name: str) -> str:
    return f"<!-- config-reference:{name} -->\n{reference_table(SCHEMAS[name])}\n<!-- /config-reference:{name} -->"


def update_readme(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name in SCHEMAS:
        pattern = re.compile(rf"<!-- config-reference:{name} -->.*?<!-- /config-reference:{name} -->", re.S)
        if pattern.search(text) is None:
            raise SystemExit(f"{path}: no <!-- config-reference:{name} --> block")
        start, end = pattern.search(text).span()  # type: ignore[union-attr]
        text = text[:start] + block(name) + text[end:]
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="update this README in place instead of printing")
    args = parser.parse_args()
    if args.write:
        update_readme(args.write)
    else:
        print("\n\n".join(block(name) for name in SCHEMAS))

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

from loraops.config import CompareConfig, EvalConfig, RemoteConfig, TrainConfig, help_rows

SCHEMAS = {"train": TrainConfig, "eval": EvalConfig, "compare": CompareConfig, "remote": RemoteConfig}
# Sections that train and eval share get a table of their own, and one row pointing there.
SECTIONS = {"remote": "Settings of `loraops remote`: the `remote` table below (remote.yaml)."}


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(map(_yaml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def reference_table(schema: type, prefix: str = "") -> str:
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    pointed: set[str] = set()
    for key, default, text in help_rows(schema, prefix):
        section = key.split(".")[0]
        if section in SECTIONS and not prefix:
            if section not in pointed:
                rows.append(f"| `{section}.*` | | {SECTIONS[section]} |")
                pointed.add(section)
            continue
        rows.append(f"| `{key}` | `{_yaml_value(default)}` | {text.replace('|', '/')} |")
    return "\n".join(rows)


def block(name: str) -> str:
    table = reference_table(SCHEMAS[name], f"{name}." if name in SECTIONS else "")
    return f"<!-- config-reference:{name} -->\n{table}\n<!-- /config-reference:{name} -->"


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

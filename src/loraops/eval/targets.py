"""What `loraops eval` evaluates: a run's adapter or a base model, and where its metrics live."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from loraops.errors import LoraopsError

BASELINE = "baseline"


@dataclass(frozen=True)
class EvalTarget:
    name: str  # run name, or baseline/<base-model key>
    base_model: str  # model_name as a user writes it (`default`, a hub id, a path)
    adapter_dir: Path | None
    run_dir: Path | None


def is_run_dir(path: Path) -> bool:
    return (path / "config_used.yaml").is_file() and (path / "model").is_dir()


def run_base_model(run_dir: Path) -> str:
    return str(yaml.safe_load((run_dir / "config_used.yaml").read_text(encoding="utf-8"))["model_name"])


def baseline_name(model_name: str) -> str:
    """A folder name per base model, so two base models never overwrite each other's metrics."""
    if Path(model_name).expanduser().exists():
        resolved = str(Path(model_name).expanduser().resolve())
        return f"{BASELINE}/{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return f"{BASELINE}/{re.sub(r'[^A-Za-z0-9._-]+', '--', model_name)}"


def find_run(model: str) -> tuple[Path | None, Path | None]:
    """(run folder, adapter folder) for a run folder, a `latest` link or an adapter folder."""
    path = Path(model).expanduser()
    if is_run_dir(path):
        run = path.resolve()
        return run, run / "model"
    if (path / "adapter_config.json").is_file():
        adapter = path.resolve()
        return (adapter.parent if is_run_dir(adapter.parent) else None), adapter
    if path.exists():
        raise LoraopsError(f"model={model}: neither a run folder (config_used.yaml + model/) nor an adapter folder")
    return None, None


def resolve_target(model: str, model_name: str | None, baseline: bool) -> EvalTarget:
    run, adapter = find_run(model)
    if adapter is None and (not baseline or model_name is None):
        raise LoraopsError(f"model={model}: no such run; train one first (`make train`)"
                           + ("" if not baseline else " or name the base model with model_name=..."))  # fmt: skip
    base = model_name or (run_base_model(run) if run else _adapter_base(adapter))  # type: ignore[arg-type]
    if baseline:
        return EvalTarget(baseline_name(base), base, None, None)
    assert adapter is not None
    return EvalTarget(run.name if run else adapter.name, base, adapter, run)


def _adapter_base(adapter: Path) -> str:
    return str(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])

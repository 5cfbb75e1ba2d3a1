"""What `loraops eval` evaluates: a run's adapter or a base model, and the name its metrics go under."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from loraops.errors import LoraopsError
from loraops.runs import find_run

BASELINE = "baseline"


@dataclass(frozen=True)
class EvalTarget:
    name: str  # run name, or baseline/<base-model key>
    base_model: str  # model_name as a user writes it (`default`, a hub id, a path)
    adapter_dir: Path | None
    run_dir: Path | None


def baseline_name(model_name: str) -> str:
    """A folder name per base model, so two base models never overwrite each other's metrics."""
    if Path(model_name).expanduser().exists():
        resolved = str(Path(model_name).expanduser().resolve())
        return f"{BASELINE}/{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    return f"{BASELINE}/{re.sub(r'[^A-Za-z0-9._-]+', '--', model_name)}"


def resolve_target(model: str, model_name: str | None, baseline: bool) -> EvalTarget:
    run, adapter = find_run(model)
    if adapter is None and (not baseline or model_name is None):
        raise LoraopsError(f"model={model}: no such run; train one first (`make train`)"
                           + ("" if not baseline else " or name the base model with model_name=..."))  # fmt: skip
    base = model_name or (run.base_model() if run else _adapter_base(adapter))  # type: ignore[arg-type]
    if baseline:
        return EvalTarget(baseline_name(base), base, None, None)
    assert adapter is not None
    return EvalTarget(run.name if run else adapter.name, base, adapter, run.path if run else None)


def _adapter_base(adapter: Path) -> str:
    path = adapter / "adapter_config.json"
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise LoraopsError(f"{path}: not a readable adapter config ({exc})") from None
    if not base:
        raise LoraopsError(f"{path}: names no base model; pass model_name=...")
    return str(base)

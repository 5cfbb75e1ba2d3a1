"""What `loraops eval` evaluates (and `chat` and `serve` load): a run's adapter or a base model, and its name."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from loraops.errors import LoraopsError
from loraops.models import looks_like_path
from loraops.runs import RunDir, find_run

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
        raise LoraopsError(
            f"model={model}: no such run; train one first (`make train`)"
            + ("" if not baseline else " or name the base model with model_name=...")
        )
    base = model_name or (run.base_model() if run else _adapter_base(adapter))  # type: ignore[arg-type]
    if baseline:
        return EvalTarget(baseline_name(base), base, None, None)
    assert adapter is not None
    return _adapter_target(run, adapter, base)


def _adapter_target(run: RunDir | None, adapter: Path, base: str) -> EvalTarget:
    return EvalTarget(run.name if run else adapter.name, base, adapter, run.path if run else None)


def resolve_model(spec: str) -> EvalTarget:
    """What `loraops chat` and `serve` load: a run or adapter folder (a published one too) on its base, a
    model folder (a published merged model, any Hugging Face folder), a .gguf file, or a model name
    (`default`, a hub id). The name is the run's, the folder's or the model name as given."""
    path = Path(spec).expanduser()
    if (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return EvalTarget(path.resolve().name, str(path.resolve()), None, None)
    if path.is_file() and path.suffix == ".gguf":
        return EvalTarget(path.stem, str(path.resolve()), None, None)
    run, adapter = find_run(spec)
    if adapter is not None:
        return _adapter_target(run, adapter, run.base_model() if run else _adapter_base(adapter))
    if looks_like_path(spec):
        raise LoraopsError(
            f"{spec}: no run, adapter or model folder there; train a run first (`make train`), "
            "or name a model instead, e.g. `default` for the untouched default model"
        )
    return EvalTarget(spec, spec, None, None)  # a model name: resolve_model_path finds it


def _adapter_base(adapter: Path) -> str:
    path = adapter / "adapter_config.json"
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise LoraopsError(f"{path}: not a readable adapter config ({exc})") from None
    if not base:
        raise LoraopsError(f"{path}: names no base model; pass model_name=...")
    return str(base)

"""init_adapter: the finished adapter a run starts from (the usual recipe: SFT, then DPO on its result).

Checked before anything loads: it must be a finished run's adapter (or an adapter folder) trained on this
run's base model, with this run's LoRA shape, since training continues that very adapter; the run's
manifest records which one it was (path and weights' sha256).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loraops.config import TrainConfig
from loraops.data.datafiles import sha256_file
from loraops.errors import ConfigError, LoraopsError
from loraops.records import FINISHED
from loraops.runs import find_run

# loraops' LoRA keys and the names adapter_config.json gives them.
LORA_SHAPE = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_target_modules": "target_modules",
    "use_dora": "use_dora",
    "use_rslora": "use_rslora",
    "lora_modules_to_save": "modules_to_save",
}
WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class StartingAdapter:
    adapter_dir: str
    sha256: str  # of its weights, as they were when this run started
    run: str | None  # the run folder that trained it, when there is one

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def starting_adapter(cfg: TrainConfig, model_path: str) -> StartingAdapter | None:
    """The adapter `init_adapter` names, checked against this run's base model and LoRA settings."""
    if cfg.init_adapter is None:
        return None
    where = f"init_adapter={cfg.init_adapter}"
    try:
        run, adapter = find_run(cfg.init_adapter, cfg.output_dir)
    except LoraopsError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if adapter is None or not (adapter / WEIGHTS).is_file():
        raise ConfigError(f"{where}: no such run folder or adapter (it needs model/{WEIGHTS}); train one first")
    if run is not None and run.read_manifest().status != FINISHED:
        raise ConfigError(f"{where}: that run has not finished; start from a finished run")
    settings = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    _check_base(where, settings, model_path, run.read_manifest().resolved_model if run else None)
    _check_shape(where, cfg, settings)
    if cfg.lora_init != "default":
        raise ConfigError(f"{where}: lora_init={cfg.lora_init} would start a new adapter; leave it at default")
    return StartingAdapter(str(adapter), sha256_file(adapter / WEIGHTS), str(run.path) if run else None)


def _check_base(where: str, settings: dict[str, Any], model_path: str, trained_on: str | None) -> None:
    base = trained_on or settings.get("base_model_name_or_path")
    if base and Path(base).expanduser() != Path(model_path).expanduser():
        raise ConfigError(
            f"{where}: that adapter was trained on {base}, and this run trains {model_path}: set model_name to "
            "the base it was trained on"
        )


def _check_shape(where: str, cfg: TrainConfig, settings: dict[str, Any]) -> None:
    """The run's LoRA settings are the adapter's: training continues it, so they cannot differ."""
    differing = []
    for key, name in LORA_SHAPE.items():
        ours, theirs = getattr(cfg, key), settings.get(name)
        if isinstance(ours, list) or isinstance(theirs, list):
            ours, theirs = sorted(ours or []), sorted(theirs or [])
        if ours != theirs:
            differing.append(f"{key}={theirs}")
    if differing:
        raise ConfigError(f"{where}: that adapter has {', '.join(differing)}; set the same for this run")


def load_trainable(model: Any, start: StartingAdapter) -> Any:
    """The base with the starting adapter on it, its weights trainable."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, start.adapter_dir, is_trainable=True)

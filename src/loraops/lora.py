"""The LoRA adapter a config asks for: one place builds PEFT's config and wraps the model, for train and check."""

from __future__ import annotations

from typing import Any

from loraops.config import TrainConfig
from loraops.errors import ConfigError


def apply_lora(model: Any, cfg: TrainConfig, initialise: bool = True) -> Any:
    """`model` wrapped by PEFT with the config's adapter; ConfigError for settings the model cannot take.

    `initialise=False` leaves out PiSSA/OLoRA's decomposition of the base weights (a model on the meta device,
    counted but never trained, has no weights to decompose); the adapter's shape is the same.
    """
    from peft import LoraConfig, get_peft_model

    init: Any = cfg.lora_init if initialise and cfg.lora_init != "default" else True  # one of PEFT's names, or True
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
        bias="none",
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        modules_to_save=cfg.lora_modules_to_save,
        init_lora_weights=init,
        ensure_weight_tying=bool(cfg.lora_modules_to_save),  # lm_head trained in full stays tied to the embeddings
    )
    try:
        return get_peft_model(model, lora)
    except (ValueError, TypeError) as exc:  # what PEFT raises for targets the model lacks
        raise ConfigError(
            f"LoRA settings (lora_target_modules={list(cfg.lora_target_modules)}, "
            f"lora_init={cfg.lora_init}, use_dora={cfg.use_dora}): {exc}"
        ) from exc

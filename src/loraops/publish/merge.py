"""`--merged`: fold the LoRA weights into the base model, so it loads without PEFT."""

from __future__ import annotations

import logging
from pathlib import Path

from loraops.eval.targets import run_base_model
from loraops.models import load_causal_lm, load_tokenizer, resolve_model_path

log = logging.getLogger(__name__)


def merge_into(run_dir: Path, adapter_dir: Path, dest: Path) -> None:
    """Write base + adapter, merged, as a plain transformers model folder (weights, config, tokenizer)."""
    from peft import PeftModel

    base_path = resolve_model_path(run_base_model(run_dir))
    log.info("merging %s into its base model %s", adapter_dir, run_base_model(run_dir))
    # dtype "auto" keeps the base model's own dtype: a bf16 8B model stays 16 GB, not 32.
    base = load_causal_lm(base_path, "auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(dest)
    # The adapter's tokenizer carries the chat template training used (possibly a ChatML fallback).
    load_tokenizer(str(adapter_dir)).save_pretrained(dest)

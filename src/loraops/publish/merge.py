"""`--merged`: fold the LoRA weights into the base model, so it loads without PEFT."""

from __future__ import annotations

import logging
from pathlib import Path

from loraops.loading import load_adapter, load_causal_lm, load_tokenizer
from loraops.models import resolve_model_path
from loraops.runs import RunDir

log = logging.getLogger(__name__)


def merge_into(run: RunDir, dest: Path) -> None:
    """Write base + adapter, merged, as a plain transformers model folder (weights, config, tokenizer)."""
    base_name = run.base_model()
    log.info("merging %s into its base model %s", run.model_dir, base_name)
    if run.train_config().load_in_4bit:
        # Merging into 4-bit weights would round the LoRA update away; the published model is a 16-bit one.
        log.info("the run trained on a 4-bit (QLoRA) base: merging into the base loaded in 16 bits instead")
    # dtype "auto" keeps the base model's own dtype: a bf16 8B model stays 16 GB, not 32.
    base = load_causal_lm(resolve_model_path(base_name), "auto")
    merged = load_adapter(base, run.model_dir).merge_and_unload()
    merged.save_pretrained(dest)
    # The adapter's tokenizer carries the chat template training used (possibly a ChatML fallback).
    load_tokenizer(str(run.model_dir)).save_pretrained(dest)

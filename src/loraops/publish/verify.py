"""Prove that the files about to be published are the model that was evaluated.

The staged folder is loaded exactly as a user would load it (`PeftModel.from_pretrained` on the base,
or `AutoModelForCausalLM.from_pretrained` for a merged model), and a sample of the primary split is
generated again, greedily; every answer must equal the evaluated prediction, or nothing is published.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from loraops import environment
from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings, generate
from loraops.eval.preference import are_pairs, pair_logps
from loraops.eval.records import MetricsRecords
from loraops.loading import check_4bit_supported, load_adapter, load_causal_lm, load_tokenizer
from loraops.models import resolve_model_path
from loraops.records import Prediction
from loraops.runs import RunDir

log = logging.getLogger(__name__)


def _load_published(
    folder: Path, run: RunDir, merged: bool, env: environment.Environment, merge_like_eval: bool, four_bit: bool
) -> tuple[Any, Any]:
    tokenizer = load_tokenizer(str(folder))
    if merged:
        return load_causal_lm(str(folder), env.torch_dtype).to(env.device).eval(), tokenizer
    model = load_adapter(load_causal_lm(resolve_model_path(run.base_model()), env.torch_dtype, four_bit), folder)
    if four_bit:  # eval generated on the 4-bit base, unmerged, and so does this
        return model.eval(), tokenizer
    if merge_like_eval:  # eval merged the adapter: in bf16 the unmerged sum can round differently
        model = model.merge_and_unload()
    return model.to(env.device).eval(), tokenizer


def verify_published(folder: Path, run: RunDir, merged: bool, cfg: CompareConfig) -> str:
    """Regenerate `cfg.verify_samples` evaluated examples from `folder`; a description of the check, or LoraopsError."""
    if cfg.verify_samples == 0:
        return "not checked (verify_samples=0)"
    records = MetricsRecords.of(cfg.metrics_folder, run.name)
    record = records.split_record(cfg.primary_split)
    if record is None:
        return "not checked: the run has no evaluated predictions to reproduce"
    settings = record.settings
    if settings.get("do_sample"):
        return "not checked: the evaluation sampled, so its answers cannot be reproduced"
    four_bit = bool(settings.get("load_in_4bit"))
    if four_bit and merged:
        return (
            "not checked: eval generated on the 4-bit (QLoRA) base, and the merged model is 16-bit, so "
            "their answers may differ; evaluate the published folder to measure it"
        )
    if four_bit:
        check_4bit_supported()
    rows = records.predictions(cfg.primary_split)[: cfg.verify_samples]
    env = environment.detect(bool(settings.get("bf16", True)), None)
    model, tokenizer = _load_published(folder, run, merged, env, bool(settings.get("merge_adapter", True)), four_bit)
    kind = "merged model" if merged else "adapter, on its base model"
    if are_pairs(rows):
        return _verify_pairs(model, tokenizer, rows, int(settings.get("batch_size", 16)), kind, cfg.primary_split)
    again = generate(
        model,
        tokenizer,
        [r.messages for r in rows],
        GenerationSettings(settings["max_new_tokens"]),
        batch_size=int(settings.get("batch_size", 16)),
        progress=False,
    )
    for row, new in zip(rows, again):
        if new.text != row.prediction:
            raise LoraopsError(
                f"the files to publish do not reproduce the evaluated model: {row.path}:"
                f"{row.line} was answered {row.prediction!r} in evaluation, but "
                f"{new.text!r} by the staged {'merged model' if merged else 'adapter'}; nothing was "
                "published"
            )
    log.info("published files verified on %d %s examples", len(rows), cfg.primary_split)
    return (
        f"the {kind} was loaded from the published files and regenerated {len(rows)} {cfg.primary_split} "
        "examples greedily; every answer matches the evaluated prediction"
    )


def _verify_pairs(model: Any, tokenizer: Any, rows: list[Prediction], batch_size: int, kind: str, split: str) -> str:
    """A preference split's rows scored again: each pair's likelier answer must be the evaluated one."""
    again = pair_logps(model, tokenizer, [(r.messages, r.reference, r.rejected or "") for r in rows], batch_size)
    for row, logps in zip(rows, again):
        preferred = row.reference if logps["chosen"] > logps["rejected"] else row.rejected
        if preferred != row.prediction:
            raise LoraopsError(
                f"the files to publish do not reproduce the evaluated model: {row.path}:{row.line} preferred "
                f"{row.prediction!r} in evaluation, but {preferred!r} by the staged {kind}; nothing was published"
            )
    log.info("published files verified on %d %s pairs", len(rows), split)
    return (
        f"the {kind} was loaded from the published files and scored {len(rows)} {split} pairs again; every "
        "pair's likelier answer is the evaluated one"
    )

"""The answers an export must reproduce: the PEFT model's, greedy, on eval splits.

Where `loraops eval` recorded a split, its predictions are used: the exported files are then compared with
the model that was evaluated. A split never evaluated is answered here by the PEFT model, loaded as eval
loads it, with eval.yaml's settings, so `make train && make export` needs no evaluation first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from loraops import environment
from loraops.config import CompareConfig, EvalConfig, load_config
from loraops.errors import ConfigError
from loraops.eval.data import configured_splits
from loraops.eval.generate import GenerationSettings, generate
from loraops.eval.records import MetricsRecords
from loraops.eval.scoring import predictions
from loraops.eval.text import bleu_tokenizer
from loraops.loading import load_for_inference
from loraops.models import resolve_model_path
from loraops.records import Prediction
from loraops.runs import RunDir

log = logging.getLogger(__name__)

EVALUATED, GENERATED = "evaluated", "generated"


@dataclass(frozen=True)
class Answers:
    split: str
    rows: list[Prediction]  # prompt, and the PEFT model's answer as `prediction`
    max_new_tokens: int
    source: str  # EVALUATED (loraops eval's records) or GENERATED (by export, now)


def reference_answers(
    run: RunDir, cfg: CompareConfig, splits: list[str], limit: int | None, config_dir: Path
) -> list[Answers]:
    records = MetricsRecords.of(cfg.metrics_folder, run.name)
    found, missing = [], []
    for split in splits:
        record = records.split_record(split)
        if record is None:
            missing.append(split)
            continue
        if record.settings.get("do_sample"):
            raise ConfigError(f"the evaluation of {split} sampled its answers: no export can reproduce them")
        rows = records.predictions(split)[:limit]
        found.append(Answers(split, rows, int(record.settings.get("max_new_tokens", 64)), EVALUATED))
    return found + (_generated(run, missing, limit, config_dir) if missing else [])


def _generated(run: RunDir, splits: list[str], limit: int | None, config_dir: Path) -> list[Answers]:
    overrides = [f"model={run.path}", f"splits=[{','.join(splits)}]"] + ([f"limit={limit}"] if limit else [])
    cfg = load_config(EvalConfig, config_dir, "eval", overrides)
    examples = configured_splits(cfg)  # every data error before the model loads
    if cfg.do_sample:
        raise ConfigError("eval.yaml samples (do_sample=true): export compares greedy answers; set it false")
    log.info("%s not evaluated: generating the PEFT model's answers first", ", ".join(splits))
    env = environment.detect(cfg.bf16, cfg.cuda_visible_devices, cfg.device)
    model, tokenizer = load_for_inference(resolve_model_path(run.base_model()), run.model_dir, env, cfg.merge_adapter)
    settings = GenerationSettings(cfg.max_new_tokens)
    answers = []
    for split, rows in examples.items():
        made = generate(model, tokenizer, [e.prompt for e in rows], settings, cfg.batch_size, progress=False)
        scored = predictions(rows, made, bleu_tokenizer(e.reference for e in rows))
        answers.append(Answers(split, scored, cfg.max_new_tokens, GENERATED))
    return answers

"""`loraops eval`: generate on every split, score, and record the results (a thin user of eval/scoring.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loraops import environment
from loraops.config import RECORDED, EvalConfig, marked
from loraops.errors import ConfigError
from loraops.eval.data import EvalExample, configured_splits
from loraops.eval.fingerprint import split_fingerprint
from loraops.eval.generate import GenerationSettings
from loraops.eval.preference import are_pairs, preference_metrics, score_pairs
from loraops.eval.records import OVERALL, MetricsRecords
from loraops.eval.scoring import generate_and_score, split_metrics
from loraops.eval.targets import EvalTarget, resolve_target
from loraops.eval.text import bleu_tokenizer
from loraops.loading import check_4bit_supported, load_for_inference
from loraops.models import model_revision, resolve_model_path
from loraops.records import EvalSummary, EvalTargetRecord, Prediction, Scores, SplitRecord
from loraops.runs import RunDir
from loraops.tracking import Settings
from loraops.tracking.results import record_eval, record_model_eval

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    target: EvalTarget
    out_dir: Path
    metrics: dict[str, Scores]  # split (and "overall") -> metrics


def _four_bit(cfg: EvalConfig, target: EvalTarget) -> bool:
    """Generate on the base the run trained on: 4-bit for a QLoRA run, unless the config says otherwise."""
    trained = RunDir(target.run_dir).train_config().load_in_4bit if target.run_dir else False
    four_bit = bool(trained if cfg.load_in_4bit is None else cfg.load_in_4bit)
    if four_bit:
        check_4bit_supported()
    return four_bit


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate the configured model on every split; write metrics and predictions."""
    from transformers import set_seed

    target = resolve_target(cfg.model, cfg.model_name, cfg.baseline)
    if target.run_dir is not None:
        RunDir(target.run_dir).announce()
        _same_prompts(cfg, RunDir(target.run_dir))
    splits = configured_splits(cfg)  # every data error before the model loads
    four_bit = _four_bit(cfg, target)  # before anything heavy: QLoRA needs CUDA
    env = environment.detect(cfg.bf16, cfg.cuda_visible_devices, cfg.device)
    log.info("evaluating %s (base %s) on %s, %s", target.name, target.base_model, env.device_name, env.precision)
    set_seed(cfg.seed)
    base_path = resolve_model_path(target.base_model)  # once: for a hub id it probes the network
    model, tokenizer = load_for_inference(base_path, target.adapter_dir, env, cfg.merge_adapter, four_bit)
    base = {"name": target.base_model, "revision": model_revision(base_path)}
    records = MetricsRecords.of(cfg.metrics_dir, target.name)
    settings = {**cfg.model_dump(include=set(marked(EvalConfig, RECORDED))), "load_in_4bit": four_bit}
    metrics: dict[str, Scores] = {}
    every: list[Prediction] = []
    for name, examples in splits.items():
        metrics[name], rows, fingerprint = _evaluate_split(model, tokenizer, name, examples, cfg, base)
        model_record = _target_record(target)
        records.write_split(
            SplitRecord(
                split=name, model=model_record, metrics=metrics[name], fingerprint=fingerprint, settings=settings
            ),
            rows,
        )
        log.info("%s: %s", name, _summary(metrics[name]))
        every += [] if are_pairs(rows) else rows  # overall: the generated answers
    metrics[OVERALL] = split_metrics(every, bleu_tokenizer(r.reference for r in every))
    records.write_summary(EvalSummary(model=_target_record(target), metrics=metrics))
    _track(cfg, target, metrics, records)
    return EvalResult(target, records.folder, metrics)


def _same_prompts(cfg: EvalConfig, run: RunDir) -> None:
    """A run trained on continuations answers continuation prompts, not chat ones (and the other way round)."""
    trained = run.train_config().prompt_completion
    if trained != cfg.prompt_completion:
        raise ConfigError(
            f"{run.path} trained with prompt_completion={trained}; evaluate it with the prompts it learned: "
            f"prompt_completion={trained}"
        )


def _evaluate_split(
    model: Any, tokenizer: Any, name: str, examples: list[EvalExample], cfg: EvalConfig, base: dict[str, str | None]
) -> tuple[Scores, list[Prediction], dict[str, Any]]:
    """Generate and score one split (a preference split: score its pairs); its metrics, per-example rows and
    fingerprint."""
    if examples[0].rejected is not None:
        started = time.monotonic()
        rows = score_pairs(model, tokenizer, examples, cfg.batch_size)
        metrics = {**preference_metrics(rows), "scoring_s": round(time.monotonic() - started, 2)}
        return metrics, rows, split_fingerprint(examples, tokenizer, base, None, cfg.seed, "13a")
    longest = (cfg.split_max_new_tokens or {}).get(name, cfg.max_new_tokens)
    settings = GenerationSettings(longest, cfg.do_sample, cfg.temperature, cfg.top_p)
    tokenize = bleu_tokenizer(e.reference for e in examples)
    metrics, rows = generate_and_score(model, tokenizer, examples, settings, cfg.batch_size, tokenize=tokenize)
    if metrics["stopped_at_eos_pct"] < 50:
        log.warning(
            "%s: %.0f%% of the answers ran into max_new_tokens=%d and were cut, so their scores judge cut answers; "
            "raise it for this split: split_max_new_tokens='{%s: %d}'",
            name,
            100 - metrics["stopped_at_eos_pct"],
            longest,
            name,
            4 * longest,
        )
    return metrics, rows, split_fingerprint(examples, tokenizer, base, settings, cfg.seed, tokenize)


def _target_record(target: EvalTarget) -> EvalTargetRecord:
    return EvalTargetRecord.model_validate({k: None if v is None else str(v) for k, v in asdict(target).items()})


def _summary(m: Scores) -> str:
    if "preference_accuracy" in m:
        return (
            f"preference_accuracy {m['preference_accuracy']:.1f}%  logp_margin {m['logp_margin']:+.3f}  "
            f"(n={m['n']} pairs)"
        )
    return (
        f"exact_match {m['exact_match']:.1f}%  answer_match {m['answer_match']:.1f}%  "
        f"jaccard {m['jaccard']:.3f}  rougeL {m['rougeL']:.3f}  "
        f"bleu {m['bleu']:.1f}  stopped at EOS {m['stopped_at_eos_pct']:.0f}%  (n={m['n']})"
    )


def _track(cfg: EvalConfig, target: EvalTarget, metrics: dict[str, Scores], records: MetricsRecords) -> None:
    """The scores into the run's metrics.json and its trackers; a base model's evaluation gets its own MLflow run."""
    settings = Settings.of(cfg)
    if target.run_dir is not None:
        run = RunDir(target.run_dir)
        record_eval(run, metrics, run.record_eval(metrics), records.files(), settings)
        return
    kind = "baseline" if cfg.baseline else "adapter"
    record_model_eval(target.name, target.base_model, kind, metrics, records.files(), settings)

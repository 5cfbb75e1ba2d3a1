"""`loraops eval`: generate on every split, score, and record the results."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loraops import environment
from loraops.config import EvalConfig
from loraops.data.formats import FormatOptions
from loraops.data.tokenize import ensure_chat_template
from loraops.eval.data import EvalExample, find_splits, load_split
from loraops.eval.fingerprint import example_id, split_fingerprint
from loraops.eval.generate import Generation, GenerationSettings, generate
from loraops.eval.metrics import example_scores, summarize
from loraops.eval.records import OVERALL, MetricsRecords
from loraops.eval.targets import EvalTarget, resolve_target
from loraops.eval.text import bleu_tokenizer
from loraops.models import (
    check_4bit_supported,
    load_adapter,
    load_causal_lm,
    load_tokenizer,
    model_revision,
    resolve_model_path,
)
from loraops.runs import RunDir
from loraops.tracking import Settings
from loraops.tracking.results import record_eval, record_model_eval

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    target: EvalTarget
    out_dir: Path
    metrics: dict[str, dict[str, float]]  # split (and "overall") -> metrics


def load_model(
    target: EvalTarget,
    env: environment.Environment,
    merge: bool,
    base_path: str | None = None,
    load_in_4bit: bool = False,
) -> tuple[Any, Any]:
    """The base model, with the target's adapter applied (and merged, if asked; never into 4-bit weights)."""
    base_path = base_path or resolve_model_path(target.base_model)
    tokenizer = load_tokenizer(str(target.adapter_dir or base_path))
    ensure_chat_template(tokenizer)  # a base without a template gets the same fallback training used
    model = load_causal_lm(base_path, env.torch_dtype, load_in_4bit)
    if target.adapter_dir is not None:
        model = load_adapter(model, target.adapter_dir)
        if merge and not load_in_4bit:
            model = model.merge_and_unload()
    if not load_in_4bit:  # 4-bit weights were placed on their GPU at load time
        model.to(env.device)
    return model.eval(), tokenizer


def _four_bit(cfg: EvalConfig, target: EvalTarget) -> bool:
    """Generate on the base the run trained on: 4-bit for a QLoRA run, unless the config says otherwise."""
    trained = RunDir(target.run_dir).read_config().get("load_in_4bit", False) if target.run_dir else False
    four_bit = bool(trained if cfg.load_in_4bit is None else cfg.load_in_4bit)
    if four_bit:
        check_4bit_supported()
    return four_bit


def _predictions(
    examples: list[EvalExample], generations: list[Generation], bleu_tokenize: str
) -> list[dict[str, Any]]:
    return [
        {
            "id": example_id(e),
            "path": e.path,
            "line": e.line,
            "prompt": e.prompt[-1]["content"],
            "messages": e.prompt,
            "reference": e.reference,
            "prediction": g.text,
            "stopped_at_eos": g.stopped,
            "new_tokens": g.new_tokens,
            "scores": example_scores(g.text, e.reference, bleu_tokenize),
        }
        for e, g in zip(examples, generations)
    ]


def _split_metrics(rows: list[dict[str, Any]], bleu_tokenize: str) -> dict[str, float]:
    metrics = summarize(
        [r["scores"] for r in rows], [r["prediction"] for r in rows], [r["reference"] for r in rows], bleu_tokenize
    )
    metrics["stopped_at_eos_pct"] = round(100 * sum(r["stopped_at_eos"] for r in rows) / max(1, len(rows)), 2)
    return metrics


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate the configured model on every split; write metrics and predictions."""
    from transformers import set_seed

    target = resolve_target(cfg.model, cfg.model_name, cfg.baseline)
    if target.run_dir is not None:
        RunDir(target.run_dir).announce()
    options = FormatOptions(cfg.data_format, dict(cfg.columns or {}), cfg.system_prompt)
    found = find_splits(cfg.eval_dir, cfg.eval_pattern, cfg.splits)
    splits = {name: load_split(path, options) for name, path in found.items()}
    splits = {name: examples[: cfg.limit] if cfg.limit else examples for name, examples in splits.items()}
    four_bit = _four_bit(cfg, target)  # before anything heavy: QLoRA needs CUDA
    env = environment.detect(cfg.bf16, cfg.cuda_visible_devices)
    log.info("evaluating %s (base %s) on %s, %s", target.name, target.base_model, env.device_name, env.precision)
    set_seed(cfg.seed)
    base_path = resolve_model_path(target.base_model)  # once: for a hub id it probes the network
    model, tokenizer = load_model(target, env, cfg.merge_adapter, base_path, four_bit)
    base = {"name": target.base_model, "revision": model_revision(base_path)}
    records = MetricsRecords.of(cfg.output_dir, target.name)
    all_rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    for name, examples in splits.items():
        metrics[name], rows, fingerprint = _evaluate_split(model, tokenizer, examples, cfg, base)
        records.write_split(name, _split_record(name, target, cfg, metrics[name], fingerprint, four_bit), rows)
        log.info("%s: %s", name, _summary(metrics[name]))
        all_rows += rows
    metrics[OVERALL] = _split_metrics(all_rows, bleu_tokenizer(r["reference"] for r in all_rows))
    records.write_summary({"model": asdict(target), "metrics": metrics})
    if target.run_dir is not None:
        _record_in_run(RunDir(target.run_dir), metrics, records.folder, Settings.of(cfg))
    else:  # the base model (or a bare adapter): an MLflow run of its own
        record_model_eval(
            target.name,
            target.base_model,
            "baseline" if cfg.baseline else "adapter",
            metrics,
            records.folder,
            Settings.of(cfg),
        )
    return EvalResult(target, records.folder, metrics)


def generate_and_score(
    model: Any,
    tokenizer: Any,
    examples: list[EvalExample],
    settings: GenerationSettings,
    batch_size: int,
    progress: bool = True,
    tokenize: str | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Generate an answer to every example and score it: the split's metrics and per-example rows.

    `loraops eval` and the validation during training both score through here, so their numbers agree.
    """
    tokenize = tokenize or bleu_tokenizer(e.reference for e in examples)  # chosen by the references, recorded
    started = time.monotonic()
    generations = generate(model, tokenizer, [e.prompt for e in examples], settings, batch_size, progress)
    rows = _predictions(examples, generations, tokenize)
    return {**_split_metrics(rows, tokenize), "generation_s": round(time.monotonic() - started, 2)}, rows


def _evaluate_split(
    model: Any, tokenizer: Any, examples: list[EvalExample], cfg: EvalConfig, base: dict[str, str | None]
) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, Any]]:
    """Generate and score one split; its metrics, per-example rows and fingerprint."""
    settings = GenerationSettings(cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.top_p)
    tokenize = bleu_tokenizer(e.reference for e in examples)
    metrics, rows = generate_and_score(model, tokenizer, examples, settings, cfg.batch_size, tokenize=tokenize)
    return metrics, rows, split_fingerprint(examples, tokenizer, base, settings, cfg.seed, tokenize)


def _summary(m: dict[str, float]) -> str:
    return (
        f"exact_match {m['exact_match']:.1f}%  jaccard {m['jaccard']:.3f}  rougeL {m['rougeL']:.3f}  "
        f"bleu {m['bleu']:.1f}  stopped at EOS {m['stopped_at_eos_pct']:.0f}%  (n={m['n']})"
    )


def _split_record(
    name: str,
    target: EvalTarget,
    cfg: EvalConfig,
    metrics: dict[str, float],
    fingerprint: dict[str, Any],
    four_bit: bool,
) -> dict[str, Any]:
    settings = (
        "eval_dir",
        "batch_size",
        "max_new_tokens",
        "do_sample",
        "temperature",
        "top_p",
        "merge_adapter",
        "limit",
        "seed",
        "bf16",
    )
    return {
        "split": name,
        "model": asdict(target),
        "metrics": metrics,
        "fingerprint": fingerprint,
        "settings": {**{k: getattr(cfg, k) for k in settings}, "load_in_4bit": four_bit},
    }


def _record_in_run(run: RunDir, metrics: dict[str, dict[str, float]], folder: Path, tracking: Settings) -> None:
    """Add the scores to the run's metrics, its TensorBoard logs and its MLflow run, as `tracking` says."""
    from torch.utils.tensorboard import SummaryWriter

    step = run.record_eval(metrics)
    record_eval(run, metrics, step, folder, tracking)
    if not tracking.tensorboard:
        return
    writer = SummaryWriter(log_dir=str(run.logs_dir))
    for split, values in metrics.items():
        for key, value in values.items():
            writer.add_scalar(f"eval/{split}/{key}", value, step)
    writer.close()

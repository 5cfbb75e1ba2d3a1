"""One LoRA training run: data → model → Trainer → adapter and run records."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops import distributed, environment, preference, provenance, selection, tracking
from loraops.atomic import writing
from loraops.config import RESUMABLE, TrainConfig, marked
from loraops.data.datafiles import dataset_sha256
from loraops.data.packing import PackedCollator
from loraops.data.prepare import PreparedData, prepare_data
from loraops.errors import ConfigError
from loraops.launch import MUTATING_INITS, Launch, plan
from loraops.loading import load_causal_lm, load_tokenizer
from loraops.lora import apply_lora
from loraops.models import resolve_model_path
from loraops.records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    DataFileEntry,
    DataLineage,
    GitInfo,
    Manifest,
    RunMetrics,
    ValidationSummary,
)
from loraops.runs import RunDir, check_runs_dir
from loraops.starting_adapter import StartingAdapter, load_trainable, starting_adapter
from loraops.trainer import LoraopsTrainer, check_one_gpu_per_process, training_arguments, validation_generator

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: RunMetrics


def _lora_model(
    cfg: TrainConfig,
    model_path: str,
    env: environment.Environment,
    run: RunDir,
    launch: Launch,
    start: StartingAdapter | None,
) -> Any:
    from transformers import set_seed

    set_seed(cfg.seed)  # LoRA's initial weights are random
    sharded = launch.sharding in ("fsdp", "zero3")
    model = load_causal_lm(model_path, env.torch_dtype, cfg.load_in_4bit, cfg.attn_implementation, sharded)
    # The cache is for generation; in training it costs memory, and it hides packed rows' boundaries.
    model.config.use_cache = False
    if cfg.load_in_4bit:
        model = _prepared_4bit(model, cfg, env.torch_dtype, sharded)
    model = load_trainable(model, start) if start else apply_lora(model, cfg)
    if start:
        log.info("starting from the adapter of %s", start.run or start.adapter_dir)
    if cfg.lora_init.startswith(MUTATING_INITS) and distributed.is_main():
        _save_initial_adapter(model, run)
    trainable, total = model.get_nb_trainable_parameters()
    variant = "".join(
        f", {name}"
        for name, on in (
            ("DoRA", cfg.use_dora),
            ("rsLoRA", cfg.use_rslora),
            (f"{cfg.lora_init} init", cfg.lora_init != "default"),
            ("4-bit base (QLoRA)", cfg.load_in_4bit),
        )
        if on
    )
    log.info(
        "LoRA r=%d on %s%s: %d trainable of %d parameters (%.2f%%)",
        cfg.lora_r,
        ",".join(cfg.lora_target_modules),
        variant,
        trainable,
        total,
        100 * trainable / total,
    )
    return model


def _prepared_4bit(model: Any, cfg: TrainConfig, dtype: Any, sharded: bool) -> Any:
    """A 4-bit base made trainable, as TRL prepares one. PEFT's preparation upcasts every weight that is not
    4-bit to fp32, embeddings and LM head included (+2 GiB on Llama-3's 128k vocabulary): those go back to
    the compute dtype. Sharded (FSDP, ZeRO-3), the preparation is left out: a flat parameter holds one dtype."""
    import torch
    from peft import prepare_model_for_kbit_training

    if sharded:
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed blocks need an input that wants gradients
        return model
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None and module.weight.dtype == torch.float32 and dtype != torch.float32:
            module.to(dtype)
    return model


def _save_initial_adapter(model: Any, run: RunDir) -> None:
    """PiSSA/OLoRA start from the base's own singular vectors; their start is kept to convert the result."""
    config = model.peft_config["default"]
    chosen, config.init_lora_weights = config.init_lora_weights, True  # saved as a plain LoRA starting point
    model.save_pretrained(str(run.initial_adapter_dir))
    config.init_lora_weights = chosen


def _fit(
    cfg: TrainConfig,
    run: RunDir,
    env: environment.Environment,
    args: Any,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    checkpoint: str | None,
    trackers: tracking.TrainingTrackers,
) -> RunMetrics:
    from datasets import Dataset

    from loraops.callbacks import LossLogCallback

    validation = data.validation
    progress = LossLogCallback()
    callbacks = [*trackers.callbacks, *_early_stopping(cfg, validating=validation is not None)]
    _log_global_batch(cfg)
    guards = {
        "callbacks": [progress, *callbacks],
        "generator": validation_generator(cfg, tokenizer, validation.examples) if validation else None,
        "precision": env.precision,
    }
    if cfg.method != "sft":
        rows = validation.rows if validation else None
        trainer = preference.trainer(cfg, args, model, tokenizer, data.rows, rows, **guards)
    else:
        trainer = LoraopsTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data.rows),
            eval_dataset=Dataset.from_list(validation.rows) if validation else None,
            data_collator=_collator(tokenizer, model),
            processing_class=tokenizer,
            # Liger's fused linear cross-entropy takes the loss from the hidden states: no logits to gather.
            labelled_logits_only=cfg.labelled_logits_only and not cfg.liger_kernel,
            **guards,
        )
    started = time.monotonic()
    with writing(run.checkpoints_dir, "a checkpoint or the training logs"):  # what the Trainer writes as it goes
        trainer.train(resume_from_checkpoint=checkpoint)
    runtime = time.monotonic() - started
    trainer.check_final_update()
    preference.without_reference(trainer.model)
    _save_adapter(trainer, run, converted=cfg.lora_init.startswith(MUTATING_INITS))
    fit = _training_summary(trainer.state, progress, checkpoint, runtime)
    if validation is not None:
        fit.validation = _validation_summary(trainer, cfg, progress, runtime, validation.stats.as_dict())
    return fit


def _log_global_batch(cfg: TrainConfig) -> None:
    processes, per_device, accumulation = distributed.world_size(), cfg.batch_size, cfg.gradient_accumulation_steps
    total = per_device * accumulation * processes
    log.info(
        f"global batch: {per_device} per device x {accumulation} accumulation x {processes} processes = "
        f"{total} examples per step"
    )


def _early_stopping(cfg: TrainConfig, validating: bool) -> list[Any]:
    from transformers import EarlyStoppingCallback

    if not validating or cfg.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_min_delta)]


def _validation_summary(
    trainer: Any, cfg: TrainConfig, progress: Any, runtime: float, data: dict[str, Any]
) -> ValidationSummary:
    from transformers import EarlyStoppingCallback

    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    summary = selection.summary(trainer.state, cfg, stopper, progress.step_at_start)
    share = round(summary.seconds / runtime, 4) if runtime else None
    return summary.model_copy(update={"data": data, "share_of_runtime": share})


def _collator(tokenizer: Any, model: Any) -> PackedCollator:
    from transformers import DataCollatorForSeq2Seq

    # Pads each batch to its longest member; label padding is -100 by position, never by token id.
    unpacked = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    # Flash attention (and hub kernels of it) reads packed boundaries only from one flattened row: the varlen
    # path, each example apart; sdpa and eager read them from each row's positions, through a full mask.
    flatten = "flash" in str(getattr(model.config, "_attn_implementation", ""))
    return PackedCollator(tokenizer.pad_token_id, unpacked, flatten)


def _save_adapter(trainer: Any, run: RunDir, converted: bool) -> None:
    """The kept adapter and tokenizer into model/; a part-written model/ is removed, so nothing loads it."""
    try:
        with writing(run.model_dir, "the trained adapter"):
            _write_adapter(trainer, run, converted)
    except BaseException:
        if distributed.is_main():
            shutil.rmtree(run.model_dir, ignore_errors=True)
        raise


def _write_adapter(trainer: Any, run: RunDir, converted: bool) -> None:
    """Through the Trainer, which gathers FSDP and ZeRO-3 shards."""
    trainer.save_model(str(run.model_dir))  # every process takes part; the main one writes
    if distributed.is_main():
        (run.model_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle, and the run keeps its config
    if converted and distributed.is_main():
        # As a plain LoRA (rank 2r) on the untouched base, so PeftModel.from_pretrained(base, model/) just works.
        trainer.model.save_pretrained(
            str(run.model_dir), path_initial_model_for_weight_conversion=str(run.initial_adapter_dir)
        )


def _training_summary(state: Any, progress: Any, checkpoint: str | None, runtime: float) -> RunMetrics:
    from loraops.callbacks import epoch_losses, loss_entries

    entries = loss_entries(state.log_history)
    tokens = int(state.num_input_tokens_seen)
    session_tokens = tokens - progress.tokens_at_start
    return RunMetrics(
        train_loss=round(sum(e["loss"] * e["steps"] for e in entries) / max(1, sum(e["steps"] for e in entries)), 6),
        first_logged_loss=entries[0]["loss"] if entries else None,
        final_logged_loss=entries[-1]["loss"] if entries else None,
        epoch_train_loss=epoch_losses(entries),
        loss_history=[{k: e[k] for k in ("step", "loss", "learning_rate") if k in e} for e in entries],
        global_steps=state.global_step,
        epochs_completed=round(state.epoch or 0.0, 4),
        resumed_from=checkpoint,
        runtime_s=round(runtime, 2),
        train_tokens=tokens,
        tokens_per_second=round(session_tokens / runtime, 2) if runtime > 0 else None,
    )


def _manifest(
    cfg: TrainConfig, env: environment.Environment, model_path: str, data: PreparedData, start: StartingAdapter | None
) -> Manifest:
    files = [DataFileEntry(name=f.name, path=str(f.path), sha256=f.sha256) for f in data.files]
    return Manifest(
        model_name=cfg.model_name,
        resolved_model=model_path,
        git=GitInfo.model_validate(provenance.git_commit()),
        data=DataLineage(source=data.source, files=files, dataset_sha256=dataset_sha256(data.files)),
        validation=data.validation.source if data.validation else None,
        init_adapter=start.as_record() if start else None,
        chat_template="chatml fallback (the model has none)" if data.template_added else "the model's own",
        environment=env.as_dict(),
        libraries=provenance.library_versions(),
    )


def preflight(cfg: TrainConfig) -> None:
    """What training checks before the model loads (the model's name, its tokenizer, every data error), run once
    in the process about to start a launcher: else each of its processes would fail on it alike."""
    model_path = resolve_model_path(cfg.model_name)
    prepare_data(cfg, load_tokenizer(model_path), model_path)
    starting_adapter(cfg, model_path)


def train(cfg: TrainConfig, launch: Launch | None = None) -> TrainResult:
    """Run one training job end to end and return its run folder and metrics.

    Under a launcher every process runs this; only the main one writes the run's records and moves `latest`.
    """
    launch = launch or plan(cfg)  # before the process group: cuda_visible_devices must come first
    distributed.init()
    env = environment.detect(cfg.bf16, None, cfg.device)
    threads = environment.use_cpu_threads(cfg.cpu_threads, launch.processes) if env.device == "cpu" else None
    log.info(
        "device: %s, precision: %s, processes: %d%s",
        env.device_name,
        env.precision,
        distributed.world_size(),
        f", {threads} CPU threads each" if threads else "",
    )
    model_path = resolve_model_path(cfg.model_name)
    tokenizer = load_tokenizer(model_path)
    data = prepare_data(cfg, tokenizer, model_path)  # all data errors surface here, before a run folder exists
    start = starting_adapter(cfg, model_path)
    run, checkpoint = _resume_point(cfg, data) if cfg.resume_from else (_new_run(cfg.output_dir), None)
    main = distributed.is_main()
    manifest = _manifest(cfg, env, model_path, data, start)  # once: it runs git and reads package metadata
    with _log_to_file(run.train_log if main else None):
        log.info("run folder: %s%s", run.path, f" (resuming from {checkpoint})" if checkpoint else "")
        trackers = tracking.TrainingTrackers()
        try:
            if main:
                run.write_config(_config_dict(cfg))
                run.write_manifest(manifest.model_copy(update={"status": RUNNING}))
                trackers = tracking.start_training(run, tracking.Settings.of(cfg))
            # The Trainer's arguments before the model: they tell transformers that ZeRO-3 is on, so each
            # process loads only its shard (zero3_init_flag) instead of the whole model.
            validating = data.validation is not None
            args = (
                training_arguments(cfg, run, env, validating)
                if cfg.method == "sft"
                else preference.arguments(cfg, run, env, validating)
            )
            check_one_gpu_per_process(args)
            model = _lora_model(cfg, model_path, env, run, launch, start)
            fit = _fit(cfg, run, env, args, model, tokenizer, data, checkpoint, trackers)
            metrics = fit.model_copy(update=_context(data, env))
            if main:
                run.remove_checkpoints()  # they only serve resuming; the finished adapter is in model/
                run.write_metrics(metrics)
                run.write_manifest(manifest.model_copy(update={"status": FINISHED}))
                trackers.finish()
        except BaseException as exc:
            if main:
                status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
                run.record_stop(manifest.model_copy(update={"status": status, "error": repr(exc)}))
                trackers.finish()
            raise
    if main:
        run.mark_latest()
    log.info(
        "finished: train loss %.4f -> %.4f; adapter in %s",
        metrics.first_logged_loss or 0,
        metrics.final_logged_loss or 0,
        run.model_dir,
    )
    return TrainResult(run.path, metrics)


def _context(data: PreparedData, env: environment.Environment) -> dict[str, Any]:
    """What the metrics record about the data and the machine besides what training measured."""
    return {
        "data": data.stats.as_dict(),
        "precision": env.precision,
        "device": env.device_name,
        "processes": distributed.world_size(),
    }


def _new_run(output_dir: str) -> RunDir:
    """A new run folder, made by the main process; every process gets its path."""
    created = RunDir.create(output_dir) if distributed.is_main() else None
    if created is not None:
        created.announce()
    return RunDir(Path(distributed.share(str(created.path) if created else None)))


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def _resume_point(cfg: TrainConfig, data: PreparedData) -> tuple[RunDir, str]:
    """The unfinished run to continue and its last checkpoint; refuses when config or data changed."""
    run = RunDir(Path(cfg.resume_from or "").resolve())
    check_runs_dir(run.path.parent)  # `latest` moves when the resumed run finishes
    if not run.manifest_path.is_file():
        raise ConfigError(f"resume_from={cfg.resume_from}: not a run folder (it has no manifest)")
    manifest = run.read_manifest()
    if manifest.status == FINISHED:
        raise ConfigError(f"resume_from={cfg.resume_from}: that run finished; start a new one instead")
    before = run.read_config()
    checkpoint = run.last_checkpoint()
    if checkpoint is None:
        raise ConfigError(
            f"resume_from={cfg.resume_from}: no complete checkpoint to resume from "
            "(it stopped before the first save, or save_strategy was no)"
        )
    now = _config_dict(cfg)
    resumable = marked(TrainConfig, RESUMABLE)
    changed = sorted(k for k in set(before) | set(now) if k not in resumable and before.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"resume_from={cfg.resume_from}: the config changed since the run started ({detail})")
    if manifest.data.dataset_sha256 != dataset_sha256(data.files):
        raise ConfigError(f"resume_from={cfg.resume_from}: the training data changed since the run started")
    if distributed.is_main():
        run.announce()
    return run, checkpoint


class _RunLog(logging.FileHandler):
    """train.log; a write the system refuses (a full disk) ends the file with one warning, where logging's
    default would print a traceback for every later line."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.broken = True
        print(
            f"loraops: warning: {self.baseFilename}: cannot write the run's log ({sys.exc_info()[1]}); "
            "it goes on in the terminal only",
            file=sys.stderr,
        )


@contextmanager
def _log_to_file(path: Path | None) -> Iterator[None]:
    """The run's log also goes to train.log while the block runs (path None: no file, another process's run)."""
    if path is None:
        yield
        return
    handler = _RunLog(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("loraops").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("loraops").removeHandler(handler)
        handler.close()

"""The Trainer of a run: its arguments, validation with generation metrics, and a stop on divergence.

Selection of the best checkpoint and early stopping are the Trainer's own (`load_best_model_at_end`,
`EarlyStoppingCallback`); loraops adds the generation metrics to each evaluation, so the metric that
decides publication can also pick the checkpoint, and refuses to go on once the loss is not a number.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer

from loraops import distributed, environment
from loraops.config import TrainConfig
from loraops.config.schema import REWARD_METRICS
from loraops.data.packing import real_token_mask
from loraops.data.tokenize import IGNORE_INDEX
from loraops.errors import ConfigError, LoraopsError
from loraops.eval.data import EvalExample, as_eval_example
from loraops.eval.generate import GenerationSettings
from loraops.eval.scoring import generate_and_score, split_metrics
from loraops.eval.text import bleu_tokenizer
from loraops.records import Prediction
from loraops.runs import RunDir


class TrainingDiverged(LoraopsError):
    """The loss or gradient norm stopped being a finite number: every later step would be garbage."""

    def __init__(self, step: int, finding: str, lr: float, precision: str) -> None:
        self.step = step
        super().__init__(
            f"training diverged at step {step}: the {finding}. Likely causes: a learning rate too high "
            f"for this model and data (lr={lr:g}; try 10x lower, or more warmup), or an overflow in {precision} "
            "(fp16 overflows far sooner than bf16 or fp32). The run is recorded as failed and `latest` is unchanged."
        )


@dataclass
class ValidationGenerator:
    """Generation metrics on (a capped part of) the validation split, through `loraops eval`'s scorer."""

    tokenizer: Any
    examples: list[EvalExample]
    metrics: list[str]
    settings: GenerationSettings
    batch_size: int

    def __call__(self, model: Any) -> dict[str, float]:
        """Each process answers its share of the prompts (every world-th, from its rank); the scores come from
        all the answers, gathered in the original order, as one process alone would compute them."""
        world, rank = distributed.world_size(), distributed.rank()
        tokenize = bleu_tokenizer(e.reference for e in self.examples)
        mine = self.examples[rank::world]
        rows: list[Prediction] = []
        if mine:
            _, rows = generate_and_score(model, self.tokenizer, mine, self.settings, self.batch_size, False, tokenize)
        scores = split_metrics(interleaved(distributed.gathered(rows)), tokenize)
        return {metric: scores[metric] for metric in self.metrics}


def interleaved(shares: list[list[Any]]) -> list[Any]:
    """The items of `shares[r] = items[r::len(shares)]`, back in their original order."""
    return [item for group in itertools.zip_longest(*shares, fillvalue=_NONE) for item in group if item is not _NONE]


_NONE = object()


class LabelledPositions:
    """Makes the LM head see only the hidden states whose next token is trained.

    About three positions in four carry no label (prompts, padding), yet the standard path projects
    every one onto the 49k-word vocabulary and takes its log-softmax. A pre-hook on the head gathers
    the labelled positions first; with no mask set (generation, eval) the head sees everything.
    """

    def __init__(self, model: Any) -> None:
        self.mask: Any = None
        self.handle = model.get_output_embeddings().register_forward_pre_hook(self._gather)

    def _gather(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.mask is None:
            return None
        return (args[0][self.mask], *args[1:])

    def set_from(self, labels: Any) -> None:
        """The positions that predict a trained token: the labels shifted by one, as the causal loss is."""
        import torch

        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        self.mask = mask


def labelled_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy of the gathered logits against the trained labels, reduced as the model's own loss is."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    targets = shifted[shifted != IGNORE_INDEX]  # row-major, the order the mask gathered the hidden states in
    logits = outputs["logits"].float()
    if num_items_in_batch is None:
        return F.cross_entropy(logits, targets)
    return F.cross_entropy(logits, targets, reduction="sum") / num_items_in_batch


class RunGuards:
    """What every loraops run adds to its Trainer (transformers' or one of TRL's): a stop when the loss or the
    gradient norm is not a number, generation metrics in each validation, a check of the last update, and
    optimizer states that load on a shared CPU. Mixed in before the Trainer class."""

    def __init__(
        self, *args: Any, generator: ValidationGenerator | None = None, precision: str = "fp32", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.generator, self.precision = generator, precision

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        import torch

        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        if not torch.isfinite(loss).all():  # the Trainer's own NaN filter would average it away
            raise self._diverged("loss", float(loss.detach().float().mean()))
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # A NaN gradient norm with a finite loss: the next update would make every weight NaN.
        norm = logs.get("grad_norm")
        if norm is not None and not math.isfinite(norm) and self.precision != "fp16":  # fp16's scaler skips those
            raise self._diverged("gradient norm", norm)
        super().log(logs, start_time)  # type: ignore[misc]

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        output: Any = super().evaluation_loop(*args, **kwargs)  # type: ignore[misc]
        if self.generator is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")
            trainer: Any = self
            output.metrics.update({f"{prefix}_{k}": v for k, v in self.generator(trainer.model).items()})
        return output

    def check_final_update(self) -> None:
        """The last update has no later step whose loss would show it diverged: before the run may finish,
        the kept weights must be finite and so must one training batch's loss through them."""
        import torch

        trainer: Any = self
        # Every process takes part in the forward pass (sharded models gather), then all learn what any found.
        with torch.no_grad():
            batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
            loss = float(trainer.compute_loss(trainer.model_wrapped, batch).detach().float().mean())
        problem = None if math.isfinite(loss) else f"loss is {loss} after the last update"
        for name, weight in trainer.model.named_parameters():
            if problem is None and weight.requires_grad and not torch.isfinite(weight).all():
                problem = f"trained weight {name} is not finite"
        problem = distributed.first_found(problem)
        if problem is not None:
            raise TrainingDiverged(trainer.state.global_step, problem, trainer.args.learning_rate, self.precision)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # transformers before 5.2x maps the optimizer state to `cpu:N` when processes share the CPU, which
        # torch.load cannot restore; later releases load it on the plain CPU, as done here (no FSDP or DeepSpeed
        # runs on the CPU: launch.plan refuses them).
        import torch

        owner: Any = self  # the optimizer and scheduler exist once training has started
        args: Any = owner.args
        if checkpoint is None or args.device.type != "cpu" or args.world_size == 1:
            return super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        optimizer, scheduler = Path(checkpoint) / "optimizer.pt", Path(checkpoint) / "scheduler.pt"
        if optimizer.is_file() and scheduler.is_file():
            owner.optimizer.load_state_dict(torch.load(optimizer, map_location="cpu", weights_only=True))
            owner.lr_scheduler.load_state_dict(torch.load(scheduler, map_location="cpu", weights_only=True))

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        trainer: Any = self
        step = trainer.state.global_step + 1
        return TrainingDiverged(step, f"{what} is {value}", trainer.args.learning_rate, self.precision)


class LoraopsTrainer(RunGuards, Trainer):
    """Supervised fine-tuning: the LM head sees only the positions whose next token is trained."""

    def __init__(self, *args: Any, labelled_logits_only: bool = True, **kwargs: Any) -> None:
        kwargs["compute_loss_func"] = labelled_loss if labelled_logits_only else None
        super().__init__(*args, **kwargs)
        self.positions = LabelledPositions(self.model) if labelled_logits_only else None

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if "position_ids" in inputs:
            # Packed rows: transformers finds the examples' boundaries only when no KV cache is in play.
            inputs = {**inputs, "use_cache": False}
        if self.positions is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.positions.set_from(inputs["labels"])
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.positions.mask = None

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        # Packed batches have no attention mask, and the pad token is often EOS: the Trainer would count
        # every EOS as padding. The collator's padding is told apart by position instead.
        if "position_ids" in inputs and "attention_mask" not in inputs:
            tokenizer: Any = self.processing_class
            inputs = {**inputs, "attention_mask": real_token_mask(inputs, tokenizer.pad_token_id)}
        super()._track_num_input_tokens(inputs)


def check_one_gpu_per_process(args: Any) -> None:
    """The Trainer wraps a model in nn.DataParallel when one process sees several GPUs; loraops never lets it
    (launch.plan gives each process one), since DataParallel splits a batch behind the loss's back."""
    if args.n_gpu > 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            f"one training process sees {args.n_gpu} GPUs (CUDA_VISIBLE_DEVICES={visible}): run `loraops train` "
            "itself, which starts one process per GPU, or set cuda_visible_devices to one"
        )


def _checkpointing_arguments(arguments_class: type, enabled: bool) -> dict[str, Any]:
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing (the old name warns until v6).
    fields = getattr(arguments_class, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def training_arguments(
    cfg: TrainConfig,
    run: RunDir,
    env: environment.Environment,
    validating: bool,
    arguments_class: type | None = None,
    **extra: Any,
) -> Any:
    """The Trainer's arguments for this run: transformers' TrainingArguments, or a TRL trainer's config class
    (a subclass of it) with that trainer's own settings in `extra`."""
    from transformers import TrainingArguments

    arguments_class = arguments_class or TrainingArguments
    # With validation, a checkpoint is saved at each evaluation: the best one must exist to be kept.
    save_strategy, save_steps = (
        (cfg.eval_strategy, cfg.eval_steps) if validating else (cfg.save_strategy, cfg.save_steps)
    )
    values = dict(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers reads a value below 1 as a ratio
        weight_decay=cfg.weight_decay,
        bf16=env.precision == "bf16",
        fp16=env.precision == "fp16",
        use_cpu=env.device == "cpu",
        **_checkpointing_arguments(arguments_class, cfg.gradient_checkpointing),
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is reported (and stops the run), never averaged away
        eval_strategy=cfg.eval_strategy if validating else "no",
        eval_steps=cfg.eval_steps,
        prediction_loss_only=True,  # the loss needs no logits gathered: 49k floats per token add up
        load_best_model_at_end=validating,
        metric_for_best_model=f"eval_{REWARD_METRICS.get(cfg.select_metric, cfg.select_metric)}"
        if validating
        else None,
        greater_is_better=cfg.select_metric != "loss",
        restore_callback_states_from_checkpoint=True,  # early stopping's patience survives a resume
        # Checkpoints exist to resume an interrupted run and to keep the best; the adapter goes to model/.
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=1,  # with a best checkpoint, the Trainer keeps it as well as the last
        report_to="none",  # TensorBoard is wired to the run's logs folder by hand
        train_sampling_strategy="group_by_length",  # similar lengths per batch: less padding
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        use_liger_kernel=cfg.liger_kernel,
        torch_compile=cfg.torch_compile,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient; the search costs a graph walk per step
        disable_tqdm=False,
    )
    return arguments_class(**{**values, **extra})


def validation_generator(cfg: TrainConfig, tokenizer: Any, examples: list[Any]) -> ValidationGenerator | None:
    """The generation part of each validation, or None when only the loss is asked for."""
    if not cfg.generation_metrics:
        return None
    answered = [e for e in examples if any(m["role"] == "assistant" for m in e.messages) and e.label is not False]
    chosen = [as_eval_example(e) for e in answered[: cfg.val_limit]]  # a pair's reference: its chosen answer
    settings = GenerationSettings(max_new_tokens=cfg.val_max_new_tokens)
    return ValidationGenerator(tokenizer, chosen, cfg.generation_metrics, settings, max(cfg.batch_size, 16))

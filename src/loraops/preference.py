"""Preference tuning (dpo, orpo, kto) on TRL's trainers, inside a loraops run.

loraops renders and tokenizes the pairs itself (data/pairs.py: the chat template exactly as supervised
training renders it, so `check` shows what trains), and each trainer gets its columns ready: TRL's own
dataset preparation, which would render the conversations a second time, is left out; the losses, the
reference log-probabilities, the collators and the metrics are TRL's.

The model is loraops' PeftModel. DPO and KTO take their reference from it: TRL keeps a frozen copy of the
starting adapter (its "ref" adapter, no second model), which for a new adapter (B = 0) is the base itself
and, with init_adapter, the SFT run the training starts from. ORPO needs no reference.
"""

from __future__ import annotations

import os
import random
from typing import Any

from loraops import environment
from loraops.config import TrainConfig
from loraops.runs import RunDir
from loraops.trainer import RunGuards, training_arguments

REFERENCE_ADAPTER = "ref"  # the name TRL gives the frozen copy of the starting adapter


def arguments(cfg: TrainConfig, run: RunDir, env: environment.Environment, validating: bool) -> Any:
    """The TRL trainer's config: loraops' Trainer arguments and the method's own settings."""
    config_class, extra = _method_settings(cfg)
    return training_arguments(cfg, run, env, validating, config_class, **extra)


def _method_settings(cfg: TrainConfig) -> tuple[type, dict[str, Any]]:
    beta = {} if cfg.beta is None else {"beta": cfg.beta}
    if cfg.method == "dpo":
        from trl import DPOConfig

        losses = [cfg.loss_type or "sigmoid"]
        return DPOConfig, {**beta, "loss_type": losses, "label_smoothing": cfg.label_smoothing, "max_length": None}
    if cfg.method == "kto":
        from trl import KTOConfig

        loss = cfg.loss_type or "kto"
        weights = {"desirable_weight": cfg.desirable_weight, "undesirable_weight": cfg.undesirable_weight}
        # KTO's KL term pairs each answer with its batch neighbour's prompt: TRL needs a fixed order for it
        # (the rows are shuffled once, by the seed, instead).
        order = {"train_sampling_strategy": "sequential"} if loss == "kto" else {}
        return KTOConfig, {**beta, **weights, **order, "loss_type": loss, "max_length": None}
    _quiet_experimental()
    from trl.experimental.orpo import ORPOConfig

    # ORPO's batches hold chosen_input_ids and rejected_input_ids, no input_ids for the Trainer to count.
    return ORPOConfig, {**beta, "max_length": cfg.max_length, "include_num_input_tokens_seen": "no"}


def trainer(
    cfg: TrainConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    validation_rows: list[dict[str, Any]] | None,
    **guards: Any,
) -> Any:
    """The method's TRL trainer on loraops' rows, with loraops' run guards (`guards`: generator, precision,
    callbacks)."""
    from datasets import Dataset

    if cfg.method == "kto":
        rows = list(rows)
        random.Random(cfg.seed).shuffle(rows)  # the sequential order KTO's KL term needs, not the file's
    return _trainer_class(cfg.method)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        **guards,
    )


def without_reference(model: Any) -> None:
    """The trained adapter alone: TRL's frozen reference copy is not part of what the run saves."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)


def _trainer_class(method: str) -> type:
    if method == "dpo":
        from trl import DPOTrainer

        class DpoRun(RunGuards, DPOTrainer):
            def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
                return dataset  # prompt_ids, chosen_ids, rejected_ids: tokenized by loraops

        return DpoRun
    if method == "kto":
        from trl import KTOTrainer

        class KtoRun(RunGuards, KTOTrainer):
            def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, name: str) -> Any:
                # prompt_ids, completion_ids, label: tokenized by loraops. The KL term's mismatched answers
                # are TRL's: each batch's answers rotated by one against its prompts.
                if not self.calculate_KL:
                    return dataset
                return dataset.map(_rotated, batched=True, batch_size=args.per_device_train_batch_size)

        return KtoRun
    _quiet_experimental()
    from trl.experimental.orpo import ORPOTrainer

    class OrpoRun(RunGuards, ORPOTrainer):
        def tokenize_row(self, feature: dict[str, Any], model: Any = None) -> dict[str, Any]:
            return _orpo_columns(feature)

    return OrpoRun


def _quiet_experimental() -> None:
    # ORPO lives in trl.experimental, which warns on import; loraops pins the TRL it is tested with instead.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _rotated(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    answers = batch["completion_ids"]
    return {**batch, "KL_completion_ids": [answers[-1], *answers[:-1]]}


def _orpo_columns(feature: dict[str, Any]) -> dict[str, Any]:
    """loraops' prompt_ids, chosen_ids and rejected_ids in the columns ORPO's tokenize_row would write."""
    prompt = feature["prompt_ids"]
    columns: dict[str, Any] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = feature[f"{side}_ids"]
        columns[f"{side}_input_ids"] = prompt + answer
        columns[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
        columns[f"{side}_labels"] = [-100] * len(prompt) + answer
    return columns

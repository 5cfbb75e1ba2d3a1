"""What an estimate is computed from: the model's shape, read on the meta device, and the epoch's batches.

Neither loads a weight: the model is built from its config on the meta device and wrapped by PEFT there,
so LoRA's parameters are PEFT's own count; the batches are those the Trainer's length-grouped sampler and
the padding collator would make of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from loraops.config import TrainConfig
from loraops.data.tokenize import IGNORE_INDEX
from loraops.errors import LoraopsError
from loraops.lora import apply_lora

# Inputs that only LoRA keeps for backward, per module name of Llama-style blocks: q/k/v read one normed
# input and gate/up another (kept once each); o_proj reads attention's output, which SDPA keeps anyway.
_LORA_INPUTS = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": None,
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "mlp_mid",
}


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    head_dim: int
    params: int  # the base model's parameters
    linear_params: int  # of which in the decoder layers' linear layers: the matmuls, and what 4-bit quantises
    trainable: int  # LoRA's parameters (and those of lora_modules_to_save)
    lora_inputs: int  # per token and layer: elements kept for backward only because a LoRA reads them
    lora_ranks: int  # per layer: the ranks of its LoRA modules, summed (each A's output is kept)


@dataclass(frozen=True)
class TokenPlan:
    """The batches of one epoch as the length-grouped sampler and the padding collator build them."""

    peak_rows: int  # the largest batch: rows x its padded length
    peak_length: int
    peak_labelled: int  # the most positions with a trained label one batch can hold
    epoch_slots: int  # tokens fed per epoch, padding included
    epoch_labelled: int
    epoch_attention: int  # per epoch, rows x padded length² summed over batches: attention's cost
    steps_per_epoch: int  # optimizer steps


_NEEDED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class UnknownShape(LoraopsError):
    """The model's config lacks a dimension the estimate needs: a model unlike a decoder-only transformer."""


def token_plan(rows: Sequence[dict[str, Any]], batch_size: int, accumulation: int, seed: int) -> TokenPlan:
    """The epoch's batches as `train_sampling_strategy=group_by_length` orders them and the collator pads them."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [len(r["input_ids"]) for r in rows]
    labelled = [sum(label != IGNORE_INDEX for label in r["labels"][1:]) for r in rows]  # the loss's shifted labels
    # The Trainer's sampler orders by `length` in groups of a whole optimizer step, then batches by batch_size.
    generator = torch.Generator().manual_seed(seed)
    order = get_length_grouped_indices(lengths, batch_size * accumulation, generator=generator)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = [(len(b), max(lengths[j] for j in b)) for b in batches]
    peak_rows, peak_length = max(padded, key=lambda p: p[0] * p[1])
    return TokenPlan(
        peak_rows=peak_rows,
        peak_length=peak_length,
        peak_labelled=sum(sorted(labelled, reverse=True)[:batch_size]),
        epoch_slots=sum(n * t for n, t in padded),
        epoch_labelled=sum(labelled),
        epoch_attention=sum(n * t * t for n, t in padded),
        steps_per_epoch=-(-len(batches) // accumulation),
    )


def model_shape(model_path: str, cfg: TrainConfig) -> ModelShape:
    """The model's dimensions and LoRA's parameters, from its config on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    missing = [key for key in _NEEDED if getattr(text, key, None) is None]
    if missing:
        raise UnknownShape(f"{model_path}: its config has no {', '.join(missing)}")
    heads = text.num_attention_heads
    params, linear = sum(p.numel() for p in model.parameters()), _decoder_linear_params(model)
    trainable, lora_inputs, lora_ranks = _lora_counts(model, cfg)  # PEFT wraps the model in place: counted after
    return ModelShape(
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        vocab=text.vocab_size,
        heads=heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        params=params,
        linear_params=linear,
        trainable=trainable,
        lora_inputs=lora_inputs,
        lora_ranks=lora_ranks,
    )


def _decoder_linear_params(model: Any) -> int:
    import torch

    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def _lora_counts(model: Any, cfg: TrainConfig) -> tuple[int, int, int]:
    """Trainable parameters, and per layer LoRA's kept inputs and summed ranks, from PEFT on the meta model."""
    from peft.tuners.lora import LoraLayer

    peft_model = apply_lora(model, cfg, initialise=False)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    return (trainable, *_first_layer_lora([(n, m) for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)]))


def _first_layer_lora(layers: list[tuple[str, Any]]) -> tuple[int, int]:
    """Per token, the inputs only LoRA keeps in one decoder layer, and that layer's LoRA ranks summed."""
    first = _first_layer_prefix([name for name, _ in layers])
    inputs: dict[str, int] = {}
    ranks = 0
    for name, module in layers:
        if not name.startswith(first):
            continue
        group = _LORA_INPUTS.get(name.rsplit(".", 1)[-1], name)  # an unknown module's input counts on its own
        if group is not None:
            inputs[group] = module.in_features
        ranks += sum(module.r.values())
    return sum(inputs.values()), ranks


def _first_layer_prefix(names: list[str]) -> str:
    """`...layers.0.` for the first decoder layer that has LoRA modules ('' when names carry no layer index)."""
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part.isdigit():
                return ".".join(parts[: i + 1]) + "."
    return ""

"""Predicted peak memory and time per epoch of a training run, from the model's shape and the data's batches.

`estimate` is a pure function of four descriptions: the model as it would train (`ModelShape`, read from
its config on the meta device by loraops.shapes: no weights are loaded), the largest batch and the epoch's
batches as the Trainer would build them (`TokenPlan`), the config, and the device (`Device`). Memory is the
tensors autograd keeps for the backward pass of a Llama-style decoder block under SDPA attention, counted
tensor by tensor, plus what the allocator keeps; time is the matrix products' FLOPs over a matmul rate
measured on the device, scaled by the share of it training reaches. tests/test_estimate.py holds the
estimate against peaks measured while training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

from loraops import environment
from loraops.config import TrainConfig
from loraops.config.schema import REFERENCE_METHODS
from loraops.data.tokenize import IGNORE_INDEX
from loraops.shapes import ModelShape, TokenPlan, UnknownShape, model_shape, token_plan

log = logging.getLogger(__name__)

# Share of the measured matmul rate that training reaches, FLOPs counted as `_epoch_flops` does. CPU: the
# default config's 243 real tokens/s (README, Performance) is 68% of the 190 GFLOP/s measured beside it; a
# brief benchmark reads a little lower. CUDA: assumed from the small shapes LoRA runs (rank-16 products), not
# measured yet: `make gpu-check` measures it.
EFFICIENCY = {"cpu": 0.65, "cuda": 0.35}
# glibc keeps blocks a step frees in its heap, so a CPU process's resident memory rises above what its tensors
# hold. Measured through the Trainer, that slack was 0.33x (a 4-layer test model) and 0.60x (the default model)
# of a step's transient tensors (activations, logits); half is counted. PyTorch's CUDA caching allocator
# fragments too, as batches change length: a quarter is assumed there (not measured: `make gpu-check` does).
ALLOCATOR_SLACK = {"cpu": 0.5, "cuda": 0.25}
# A CUDA context and its kernels take memory outside PyTorch's allocator.
CUDA_CONTEXT_BYTES = 500 * 2**20
# NF4 with double quantisation: 4 bits a weight plus 8-bit block scales (one per 64) and their fp32 scales.
NF4_BYTES_PER_PARAM = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8


@dataclass(frozen=True)
class Device:
    kind: str  # cpu | cuda
    name: str
    precision: str  # fp32 | bf16 | fp16
    memory_total: int
    memory_available: int
    matmul_flops: float  # a matrix product's rate in the training precision, measured on this device
    runtime_bytes: int  # the process before the model: interpreter, libraries, data (CPU), CUDA context (GPU)


@dataclass(frozen=True)
class Layout:
    """How the run is spread: processes, and what they shard (see loraops.launch)."""

    processes: int = 1
    sharding: str | None = None  # fsdp | zero2 | zero3; None: DDP or one process, each holding everything

    @property
    def shards_weights(self) -> bool:
        return self.sharding in ("fsdp", "zero3")


@dataclass(frozen=True)
class Estimate:
    weights: int
    adapter: int
    gradients: int
    optimizer: int
    activations: int  # kept for the backward pass: every layer's, or with gradient checkpointing their inputs
    logits: int  # at the loss: logits, log-softmax and their gradients
    working: int  # inside one layer's backward: gradients in flight (and the recomputed layer, when checkpointing)
    allocator: int  # freed memory the allocator keeps (CPU: glibc's heap)
    runtime: int
    flops_per_epoch: float
    seconds_per_epoch: float
    epochs: float  # the run's length in epochs (max_steps may end it early)
    device: Device
    plan: TokenPlan
    flops_assumption: str
    layout: Layout = Layout()
    advice: tuple[str, ...] = ()  # ways under the device's free memory, when the peak is over it

    @property
    def tensors(self) -> int:
        """The training step's tensors at their peak, the loaded model aside: logits and working set never coexist."""
        return self.gradients + self.optimizer + self.activations + max(self.logits, self.working)

    @property
    def peak(self) -> int:
        return self.runtime + self.weights + self.adapter + self.tensors + self.allocator


def estimate(
    shape: ModelShape, cfg: TrainConfig, plan: TokenPlan, device: Device, layout: Layout = Layout()
) -> Estimate:
    """Peak memory per process, by component, and the time of one epoch on `device` (one per process).

    Sharded weights (FSDP, ZeRO-3): each process holds its share of every tensor, and the layer in use and the
    next (prefetched) gathered whole; ZeRO-2 shards gradients and optimizer state only; DDP shards nothing.
    """
    act = 2 if device.precision in ("bf16", "fp16") or cfg.load_in_4bit else 4
    kept, working = _activation_bytes(shape, cfg, plan, act)
    logits = _logit_bytes(shape, cfg, plan, act)
    flops = _epoch_flops(shape, cfg, plan) / layout.processes  # each process takes its share of the batches
    share = layout.processes if layout.shards_weights else 1
    states = layout.processes if layout.sharding else 1  # gradients and optimizer state: sharded by all three
    weights = _weight_bytes(shape, cfg, device)
    if layout.shards_weights:
        weights = weights // share + 2 * weights // shape.layers
    return Estimate(
        weights=weights,
        adapter=4 * shape.trainable // share,  # PEFT keeps adapters in fp32
        gradients=4 * shape.trainable // states,
        optimizer=8 * shape.trainable // states,  # AdamW: two moments per parameter
        activations=kept,
        logits=logits,
        working=working,
        allocator=int(ALLOCATOR_SLACK[device.kind] * (kept + max(logits, working))),
        runtime=device.runtime_bytes,
        flops_per_epoch=flops,
        seconds_per_epoch=flops / (device.matmul_flops * EFFICIENCY[device.kind]),
        epochs=min(cfg.epochs, cfg.max_steps / plan.steps_per_epoch) if cfg.max_steps > 0 else cfg.epochs,
        device=device,
        plan=plan,
        flops_assumption=_flops_assumption(cfg),
        layout=layout,
    )


def advice(
    shape: ModelShape, cfg: TrainConfig, plan: TokenPlan, device: Device, layout: Layout = Layout()
) -> list[str]:
    """When the peak exceeds the device's free memory: what each way out would bring it to."""
    if estimate(shape, cfg, plan, device, layout).peak <= device.memory_available:
        return []
    ways = []
    if cfg.batch_size > 1:
        half = max(1, cfg.batch_size // 2)
        smaller = _smaller_batches(plan, half / cfg.batch_size)
        ways.append(
            (
                f"batch_size={half} (gradient_accumulation_steps={cfg.gradient_accumulation_steps * 2} keeps "
                "the step's examples)",
                estimate(shape, cfg, smaller, device, layout),
            )
        )
    if not cfg.gradient_checkpointing:
        ways.append(
            (
                "gradient_checkpointing=true",
                estimate(shape, cfg.model_copy(update={"gradient_checkpointing": True}), plan, device, layout),
            )
        )
    if not cfg.load_in_4bit and device.kind == "cuda":
        ways.append(
            ("load_in_4bit=true", estimate(shape, cfg.model_copy(update={"load_in_4bit": True}), plan, device, layout))
        )
    return [f"{what}: peak {human(e.peak)}" for what, e in ways]


def _smaller_batches(plan: TokenPlan, share: float) -> TokenPlan:
    """The same data in batches `share` times the size: the largest batch shrinks, the epoch stays."""
    rows = max(1, round(plan.peak_rows * share))
    return replace(plan, peak_rows=rows, peak_labelled=-(-plan.peak_labelled * rows // plan.peak_rows))


def _weight_bytes(shape: ModelShape, cfg: TrainConfig, device: Device) -> int:
    dtype_bytes = 4 if device.precision == "fp32" else 2
    if cfg.load_in_4bit:  # the decoder's linear layers in NF4; the rest (embeddings, LM head) in the compute dtype
        return int(shape.linear_params * NF4_BYTES_PER_PARAM) + dtype_bytes * (shape.params - shape.linear_params)
    return dtype_bytes * shape.params


def _layer_elements(shape: ModelShape, length: int) -> int:
    """Elements autograd keeps per token in one decoder layer (SDPA with a padding mask, as batches have).

    The two RMSNorm inputs and their scales; q, k and v repeated to every head, and the output (the
    masked SDPA path keeps all four); the mask, one row of `length` per token; the log-sum-exp per head;
    the MLP's gate and up outputs and the activation; and what only LoRA keeps (its inputs, A's outputs).
    """
    q = shape.heads * shape.head_dim
    norms, attention, mlp = 2 * shape.hidden + 2, 4 * q + length + shape.heads, 3 * shape.intermediate
    return norms + attention + mlp + shape.lora_inputs + shape.lora_ranks


def _activation_bytes(shape: ModelShape, cfg: TrainConfig, plan: TokenPlan, dtype_bytes: int) -> tuple[int, int]:
    """(kept for backward, one layer's backward working set), in bytes, for the largest batch."""
    layer = _layer_elements(shape, plan.peak_length)
    in_flight = 2 * shape.hidden + 2 * shape.intermediate  # gradients inside one layer's backward
    kept = shape.layers * layer
    if cfg.gradient_checkpointing:  # each layer's input is kept; one layer at a time is recomputed
        kept, in_flight = shape.layers * shape.hidden, layer + in_flight
    scale = dtype_bytes * plan.peak_rows * plan.peak_length
    return scale * (kept + shape.hidden + 1), scale * in_flight  # + the final norm's input and its scale


def _logit_bytes(shape: ModelShape, cfg: TrainConfig, plan: TokenPlan, dtype_bytes: int) -> int:
    """In backward, the log-softmax output, its gradient and the logits' gradient, in fp32 for the loss."""
    positions = plan.peak_labelled if cfg.labelled_logits_only else plan.peak_rows * plan.peak_length
    per_position = 12 + (dtype_bytes if dtype_bytes != 4 else 0)  # half-precision logits are upcast once more
    return positions * shape.vocab * per_position


def _epoch_flops(shape: ModelShape, cfg: TrainConfig, plan: TokenPlan) -> float:
    """Matrix-product FLOPs of one epoch; see `_flops_assumption`."""
    lora = shape.trainable  # each LoRA parameter: one multiply-add per token in each product it takes part in
    forward = 2 * shape.linear_params + 2 * lora
    backward = 2 * shape.linear_params + 4 * lora  # input gradients through everything; LoRA's weight gradients
    passes = 3 + cfg.gradient_checkpointing  # attention: forward, backward (twice the work), the recomputation
    per_token = forward + backward + (forward if cfg.gradient_checkpointing else 0)
    attention = passes * 4 * shape.heads * shape.head_dim * shape.layers  # QK^T and AV, per token per key
    head = 4 * shape.hidden * shape.vocab * (plan.epoch_labelled if cfg.labelled_logits_only else plan.epoch_slots)
    total: float = per_token * plan.epoch_slots + attention * plan.epoch_attention + head
    if cfg.method in REFERENCE_METHODS:  # the frozen reference's forward pass over the same sequences
        total += forward * plan.epoch_slots + attention / passes * plan.epoch_attention + head / 2
    return total


def _flops_assumption(cfg: TrainConfig) -> str:
    where = "trained position" if cfg.labelled_logits_only else "position"
    recompute = ", plus one more forward (gradient checkpointing)" if cfg.gradient_checkpointing else ""
    reference = "; dpo and kto: one more forward pass, the reference's" if cfg.method in REFERENCE_METHODS else ""
    return (
        f"per token incl. padding: 4 x the decoder's linear parameters (forward, backward through the frozen "
        f"weights) + 6 x the LoRA parameters, attention 12 x heads x head_dim x layers x length{recompute}; "
        f"the LM head 4 x hidden x vocab per {where}{reference}"
    )


def for_training(
    cfg: TrainConfig, model_path: str, rows: Sequence[dict[str, Any]], layout: Layout = Layout()
) -> Estimate | None:
    """The estimate for `cfg` on this machine's training device, `rows` being what the Trainer gets.

    None, with a warning, for a model whose shape the estimate cannot read.
    """
    env = environment.detect(cfg.bf16, cfg.cuda_visible_devices, cfg.device)
    try:
        shape = model_shape(model_path, cfg)
    except UnknownShape as exc:
        log.warning("no memory and time estimate: %s", exc)
        return None
    if cfg.method != "sft":
        rows, cfg = sequences(rows), cfg.model_copy(update={"batch_size": 2 * cfg.batch_size})
    plan = token_plan(rows, cfg.batch_size, cfg.gradient_accumulation_steps, cfg.seed)
    found = environment.capacity(env)
    device = Device(
        env.device,
        env.device_name,
        env.precision,
        found.memory_total,
        found.memory_available,
        found.matmul_flops,
        CUDA_CONTEXT_BYTES if env.device == "cuda" else _process_bytes(),
    )
    result = estimate(shape, cfg, plan, device, layout)
    return replace(result, advice=tuple(advice(shape, cfg, plan, device, layout)))


def sequences(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Preference rows as the sequences a step runs: both answers of a pair after its prompt (dpo, orpo), or
    the answer and the mismatched one of KTO's KL term, in one batch of twice batch_size rows. Every answer
    token is scored (the reference's forward pass, without gradients, adds time, not peak memory)."""
    out = []
    for row in rows:
        prompt = row["prompt_ids"]
        for answer in (row["chosen_ids"], row["rejected_ids"]) if "chosen_ids" in row else (row["completion_ids"],) * 2:
            out.append({"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer})
    return out


def _process_bytes() -> int:
    """This process's resident memory: libraries, tokenizer and data, as a training process has them too."""
    import psutil

    return psutil.Process().memory_info().rss


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _layout_text(layout: Layout) -> str:
    if layout.processes == 1:
        return "one process"
    sharded = {
        "fsdp": "FSDP: all sharded",
        "zero3": "ZeRO-3: all sharded",
        "zero2": "ZeRO-2: gradients and optimizer sharded",
    }.get(layout.sharding or "", "DDP: each holds everything")
    return f"{layout.processes} processes, {sharded}"


def format_estimate(e: Estimate, verbose: bool = True) -> list[str]:
    """The report's lines: each component, the peak against the device's free memory, and the time; not
    `verbose`, the peak and the time in two lines (and the warning, if any)."""
    d, p = e.device, e.plan
    rows = [
        ("weights", e.weights),
        ("LoRA adapter", e.adapter),
        ("gradients", e.gradients),
        ("optimizer state (AdamW)", e.optimizer),
        ("activations kept for backward", e.activations),
        ("logits and loss *", e.logits),
        ("one layer's backward *", e.working),
        ("allocator slack (glibc heap)" if d.kind == "cpu" else "allocator slack", e.allocator),
        ("CUDA context" if d.kind == "cuda" else "process (libraries, data)", e.runtime),
    ]
    where = "cuda:0" if d.kind == "cuda" else "RAM"
    run = f"; {e.epochs:.3g} epochs: ~{_duration(e.seconds_per_epoch * e.epochs)}" if e.epochs != 1 else ""
    lines = [
        f"estimate for {d.name}, {d.precision}, per process ({_layout_text(e.layout)}); the largest batch: "
        f"{p.peak_rows} x {p.peak_length} "
        f"tokens, at most {p.peak_labelled} trained positions:",
        *(f"  {name:<32}{human(size):>11}" for name, size in rows),
        f"  {'peak':<32}{human(e.peak):>11}  ({where}: {human(d.memory_available)} free of {human(d.memory_total)}; "
        "the two rows marked * are never held at once, the larger counts)",
        f"  time per epoch: ~{_duration(e.seconds_per_epoch)}{run} (training only, validation not counted): "
        f"{e.flops_per_epoch / 1e12:.2f} TFLOP at {100 * EFFICIENCY[d.kind]:.0f}% of the "
        f"{d.matmul_flops / 1e9:.0f} GFLOP/s a matrix product reached just now",
        f"  FLOPs: {e.flops_assumption}",
    ]
    if not verbose:
        lines = [
            f"estimate for {d.name}, {d.precision}: peak {human(e.peak).strip()} ({where}: {human(d.memory_available)} "
            f"free); time per epoch ~{_duration(e.seconds_per_epoch)}{run}",
            "  (`loraops check --verbose` shows what makes up the peak and how the time was reckoned)",
        ]
    if e.advice:
        lines.append(f"  warning: the peak is over the {human(d.memory_available)} free; " + "; ".join(e.advice))
    return lines

"""The memory and time estimate of `check`: its model's properties, and its peak against measured training peaks."""

from __future__ import annotations

import platform
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, REPO, save_random_llama, write_jsonl

from loraops.check import check, format_report
from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.estimate import (
    CUDA_CONTEXT_BYTES,
    EFFICIENCY,
    NF4_BYTES_PER_PARAM,
    Device,
    Layout,
    ModelShape,
    TokenPlan,
    estimate,
    format_estimate,
)
from loraops.shapes import model_shape, token_plan

GIB = 2**30
# The default model's shape with LoRA r16 on the seven projections, and the sample data's batches.
SHAPE = ModelShape(
    hidden=576,
    layers=30,
    intermediate=1536,
    vocab=49152,
    heads=9,
    head_dim=64,
    params=134_515_008,
    linear_params=106_168_320,
    trainable=4_884_480,
    lora_inputs=2688,
    lora_ranks=112,
)
PLAN = TokenPlan(
    peak_rows=8,
    peak_length=116,
    peak_labelled=521,
    epoch_slots=25372,
    epoch_labelled=8062,
    epoch_attention=2_079_956,
    steps_per_epoch=41,
)
CPU = Device("cpu", "CPU", "fp32", 24 * GIB, 20 * GIB, matmul_flops=3e11, runtime_bytes=GIB // 2)
GPU = Device("cuda", "1 x GPU", "bf16", 80 * GIB, 79 * GIB, matmul_flops=5e14, runtime_bytes=CUDA_CONTEXT_BYTES)


def config(**changes: Any) -> TrainConfig:
    return TrainConfig.model_validate(changes)


def test_gradient_checkpointing_keeps_less_and_computes_more() -> None:
    plain, checkpointed = (
        estimate(SHAPE, config(), PLAN, CPU),
        estimate(SHAPE, config(gradient_checkpointing=True), PLAN, CPU),
    )
    assert checkpointed.activations < plain.activations / 10  # one input per layer instead of the layer's tensors
    assert checkpointed.working > plain.working  # the recomputed layer
    assert checkpointed.peak < plain.peak
    assert 1.2 < checkpointed.flops_per_epoch / plain.flops_per_epoch < 1.5  # one more forward pass
    assert "one more forward" in checkpointed.flops_assumption


def test_activations_grow_linearly_with_the_batch() -> None:
    one = estimate(SHAPE, config(), PLAN, CPU)
    two = estimate(SHAPE, config(), replace(PLAN, peak_rows=16), CPU)
    assert two.activations == 2 * one.activations and two.working == 2 * one.working
    assert two.logits == one.logits  # the trained positions did not change


def test_logits_scale_with_the_trained_positions_only() -> None:
    one = estimate(SHAPE, config(), PLAN, CPU)
    two = estimate(SHAPE, config(), replace(PLAN, peak_labelled=2 * PLAN.peak_labelled), CPU)
    assert two.logits == 2 * one.logits and two.activations == one.activations
    assert one.logits == PLAN.peak_labelled * SHAPE.vocab * 12  # log-softmax, its gradient, the logits' gradient
    full = estimate(SHAPE, config(labelled_logits_only=False), PLAN, CPU)
    assert full.logits == PLAN.peak_rows * PLAN.peak_length * SHAPE.vocab * 12
    assert full.flops_per_epoch > one.flops_per_epoch and "per position" in full.flops_assumption


def test_4bit_quantises_the_decoder_weights() -> None:
    half, nf4 = estimate(SHAPE, config(), PLAN, GPU), estimate(SHAPE, config(load_in_4bit=True), PLAN, GPU)
    assert half.weights == 2 * SHAPE.params
    others = SHAPE.params - SHAPE.linear_params  # embeddings and norms: cast back to bf16 after PEFT's fp32 upcast
    assert nf4.weights == int(SHAPE.linear_params * NF4_BYTES_PER_PARAM) + 2 * others
    assert 0.5 < NF4_BYTES_PER_PARAM < 0.52 and nf4.weights < half.weights


def test_half_precision_halves_the_activations() -> None:
    fp32, bf16 = estimate(SHAPE, config(), PLAN, CPU), estimate(SHAPE, config(), PLAN, replace(CPU, precision="bf16"))
    assert bf16.activations * 2 == fp32.activations and bf16.weights * 2 == fp32.weights
    assert bf16.adapter == fp32.adapter and bf16.optimizer == 8 * SHAPE.trainable  # adapters stay fp32


def test_time_is_flops_over_the_measured_rate() -> None:
    e = estimate(SHAPE, config(epochs=3), PLAN, CPU)
    assert e.seconds_per_epoch == pytest.approx(e.flops_per_epoch / (CPU.matmul_flops * EFFICIENCY["cpu"]))
    per_token = 4 * SHAPE.linear_params + 6 * SHAPE.trainable
    assert e.flops_per_epoch > per_token * PLAN.epoch_slots and e.epochs == 3
    assert estimate(SHAPE, config(max_steps=10), PLAN, CPU).epochs == pytest.approx(10 / 41)
    two = estimate(SHAPE, config(epochs=3), PLAN, CPU, Layout(processes=2))
    assert two.flops_per_epoch == pytest.approx(e.flops_per_epoch / 2)  # each process takes half the batches


def test_memory_per_process_follows_what_each_mode_shards() -> None:
    one = estimate(SHAPE, config(), PLAN, GPU)
    ddp, zero2 = (estimate(SHAPE, config(), PLAN, GPU, Layout(4, sharding)) for sharding in (None, "zero2"))
    assert (ddp.weights, ddp.optimizer, ddp.gradients) == (one.weights, one.optimizer, one.gradients)
    assert zero2.weights == one.weights and zero2.adapter == one.adapter  # ZeRO-2 keeps the model whole
    assert (zero2.optimizer, zero2.gradients) == (one.optimizer // 4, one.gradients // 4)
    for sharding in ("fsdp", "zero3"):
        sharded = estimate(SHAPE, config(), PLAN, GPU, Layout(4, sharding))
        layer = one.weights // SHAPE.layers
        assert sharded.weights == one.weights // 4 + 2 * layer  # a quarter, and the layer in use and the next
        assert (sharded.adapter, sharded.optimizer) == (one.adapter // 4, one.optimizer // 4)
        assert sharded.activations == one.activations  # each process still runs its own batch
        assert "4 processes" in format_estimate(sharded)[0]


def test_advice_only_when_the_peak_does_not_fit() -> None:
    from loraops.estimate import advice

    assert advice(SHAPE, config(), PLAN, CPU) == []
    small = replace(GPU, memory_available=GIB)
    ways = advice(SHAPE, config(), PLAN, small)
    assert [w.split(" ")[0].split(":")[0] for w in ways] == [
        "batch_size=4",
        "gradient_checkpointing=true",
        "load_in_4bit=true",
    ]
    assert "gradient_accumulation_steps=2" in ways[0]
    lines = format_estimate(replace(estimate(SHAPE, config(), PLAN, small), advice=tuple(ways)))
    assert lines[-1].startswith("  warning: the peak is over the 1.0 GiB free; batch_size=4")
    assert not any("load_in_4bit" in w for w in advice(SHAPE, config(), PLAN, replace(CPU, memory_available=GIB)))


def test_report_names_every_component() -> None:
    text = "\n".join(format_estimate(estimate(SHAPE, config(), PLAN, CPU)))
    for fragment in (
        "weights",
        "LoRA adapter",
        "gradients",
        "optimizer state (AdamW)",
        "activations kept for backward",
        "logits and loss",
        "allocator slack",
        "process (libraries, data)",
        "peak",
        "20.0 GiB free of 24.0 GiB",
        "time per epoch: ~",
        "3 epochs",
        "300 GFLOP/s",
        "FLOPs: per token",
    ):
        assert fragment in text
    assert "warning" not in text


def test_token_plan_follows_the_batches() -> None:
    rows = [{"input_ids": [1] * n, "labels": [-100] * (n - 3) + [5, 6, 7]} for n in (10, 40, 20, 30, 50)]
    one = token_plan(rows, batch_size=1, accumulation=1, seed=0)
    assert (one.peak_rows, one.peak_length, one.peak_labelled) == (1, 50, 3)
    assert one.epoch_slots == 150 and one.epoch_attention == sum(n * n for n in (10, 40, 20, 30, 50))
    assert one.epoch_labelled == 15 and one.steps_per_epoch == 5
    two = token_plan(rows, batch_size=2, accumulation=2, seed=0)
    assert two.peak_length == 50 and two.peak_rows == 2 and two.peak_labelled == 6
    assert two.epoch_slots >= 150 and two.steps_per_epoch == 2  # 3 batches, 2 per optimizer step


def test_shape_matches_the_loaded_model(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = config(lora_r=4)
    shape = model_shape(str(tiny_model_dir), cfg)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM"))
    assert shape.trainable == lora.get_nb_trainable_parameters()[0]
    assert (shape.hidden, shape.layers, shape.intermediate, shape.heads, shape.head_dim) == (64, 2, 128, 4, 16)
    assert shape.lora_inputs == 64 + 64 + 128 and shape.lora_ranks == 7 * 4  # q/k/v's input, gate/up's, down's
    only_q = model_shape(str(tiny_model_dir), config(lora_r=4, lora_target_modules=["q_proj", "o_proj"]))
    assert only_q.lora_inputs == 64 and only_q.lora_ranks == 8  # o_proj reads what attention keeps anyway


def test_unknown_target_module_is_a_user_error(tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config-dir", str(CONFIGS), *tiny_overrides, "lora_target_modules=[nope]"]) == 2
    err = capsys.readouterr().err
    assert "loraops: error: LoRA settings (lora_target_modules=['nope']" in err and "Traceback" not in err


def test_check_prints_the_estimate(tiny_overrides: list[str]) -> None:
    report = check(load_config(TrainConfig, CONFIGS, "train", tiny_overrides))
    assert report.estimate is not None and report.estimate.device.kind == "cpu"
    assert report.estimate.plan.peak_rows == 4  # batch_size=4
    text = format_report(report, verbose=True)
    assert "estimate for CPU" in text and "  peak " in text and "time per epoch" in text
    short = format_report(report).split("estimate for CPU", 1)[1].splitlines()
    assert len(short) == 2 and "peak " in short[0] and "time per epoch" in short[0] and "--verbose" in short[1]


# Measured: a 4-layer, 256-wide Llama (so that activations and logits weigh something) trained for two
# steps through `loraops train`, its training loop's tensors followed by torch.profiler's memory events.


@pytest.fixture(scope="module")
def small_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    return save_random_llama(tmp_path_factory.mktemp("small-llama"), tokenizer, 256, 768, 4, context=1024)


@pytest.fixture(scope="module")
def long_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 records of ~120-word prompts and 30-word answers: a batch of 8 x ~200 tokens."""
    words = "alpha beta gamma delta sum range column row table value mean total count".split()
    rnd = random.Random(0)
    text = lambda n: " ".join(rnd.choice(words) for _ in range(n))  # noqa: E731
    data = tmp_path_factory.mktemp("long-records")
    write_jsonl(data / "train.jsonl", [{"prompt": text(120 + n), "completion": text(30)} for n in range(16)])
    return data


def small_config(model: Path, data: Path, out: Path, *overrides: str) -> list[str]:
    return [
        f"model_name={model}",
        f"dataset_path={data}",
        f"output_dir={out}",
        "eval_strategy=no",
        "save_strategy=no",
        "max_steps=2",
        "batch_size=8",
        *overrides,
    ]


def profiled_peak(monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig) -> int:
    """Bytes the training loop's tensors held at most above what was allocated when it started."""
    from torch.profiler import ProfilerActivity, profile

    import loraops.train as train_module

    peaks = []

    class Profiled(train_module.LoraopsTrainer):  # type: ignore[misc, valid-type]
        def train(self, *args: Any, **kwargs: Any) -> Any:
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                result = super().train(*args, **kwargs)
            events = sorted(
                (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
            )
            live = peak = 0
            for _, nbytes in events:  # allocations positive, frees negative
                live += nbytes
                peak = max(peak, live)
            peaks.append(peak)
            return result

    monkeypatch.setattr(train_module, "LoraopsTrainer", Profiled)
    train_module.train(cfg)
    return peaks[0]


@pytest.mark.parametrize("overrides", [[], ["gradient_checkpointing=true"]], ids=["default", "checkpointing"])
def test_estimate_within_25_percent_of_the_measured_tensor_peak(
    small_llama_dir: Path, long_records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]
) -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", small_config(small_llama_dir, long_records, tmp_path, *overrides))
    predicted = check(cfg).estimate
    assert predicted is not None and predicted.plan.peak_rows == 8 and predicted.plan.peak_length > 150
    measured = profiled_peak(monkeypatch, cfg)
    assert measured > 100 * 2**20  # activations and logits of this size dominate the measurement
    assert 0.75 < predicted.tensors / measured < 1.25, (predicted.tensors, measured)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="Linux with glibc: its heap's slack is what is estimated")
def test_resident_peak_on_cpu_within_25_percent(small_llama_dir: Path, long_records: Path, tmp_path: Path) -> None:
    """What the operating system sees: the tensors plus the freed memory glibc keeps, in a fresh process."""
    overrides = small_config(small_llama_dir, long_records, tmp_path)
    predicted = check(load_config(TrainConfig, CONFIGS, "train", overrides)).estimate
    assert predicted is not None and predicted.allocator > 0
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "rss_peak.py"), str(CONFIGS), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = int(done.stdout.split("RSS_PEAK ")[-1])
    ratio = (predicted.tensors + predicted.allocator) / measured
    assert 0.75 < ratio < 1.25, (ratio, predicted.tensors, predicted.allocator, measured)

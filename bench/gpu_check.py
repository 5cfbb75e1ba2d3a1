#!/usr/bin/env python3
"""`make gpu-check`: the first run on a GPU machine, as one command. One line per check, OK, BAD or SKIP
(what the machine lacks: a second GPU, bitsandbytes, flash-attn, deepspeed), each with the figure it measured;
the results also go to <out>/gpu_check.json and a Markdown table, <out>/gpu_check.md, for the README.

Needs an installed checkout (`make install`: the default model converted) and no internet. On one GPU it
trains the default model a few times for --steps steps: a few minutes. With --plumbing it runs every check
on the CPU with a tiny random model instead, which is what CI does: the checks' own code, in under a minute.

    make gpu-check                                          # artifacts/gpu-check/
    .venv/bin/python bench/gpu_check.py --steps 30 --out DIR
    .venv/bin/python bench/gpu_check.py --plumbing          # CPU
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
DATA = REPO / "data"
OK, BAD, SKIP = "OK", "BAD", "SKIP"
# Dense bf16 (fp16 before Ampere) tensor-core peaks from NVIDIA's data sheets, TFLOP/s; the first name found
# in the device's name counts, so the longer names come first.
DATASHEET_TFLOPS = (
    ("H100 PCIe", 756),
    ("H100", 989),
    ("H200", 989),
    ("A100", 312),
    ("L40S", 362),
    ("L4", 121),
    ("A10", 125),
    ("V100", 125),
    ("T4", 65),
)


@dataclass
class Result:
    check: str
    status: str
    figure: str
    detail: str = ""


@dataclass
class Context:
    plumbing: bool
    steps: int
    work: Path
    model: str  # the base model every check trains
    gpus: int
    runs: dict[str, Path] = field(default_factory=dict)  # name -> run folder, for the checks that reuse a run

    def overrides(self, *extra: str) -> list[str]:
        # The tiny random model learns the sample data's first words in a few steps only at a high rate.
        rate = ["lr=1e-2"] if self.plumbing else []
        return [
            *rate,
            f"model_name={self.model}",
            f"dataset_path={DATA}",
            f"output_dir={self.work / 'runs'}",
            f"max_steps={self.steps}",
            "batch_size=8",
            "eval_strategy=no",
            "save_strategy=no",
            "logging_steps=1",
            "tracking=tensorboard",
            *extra,
        ]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _skip(check: str, why: str) -> Result:
    return Result(check, SKIP, "-", why)


# --- training ----------------------------------------------------------------------------------------


def _train(ctx: Context, name: str, *extra: str) -> Any:
    from loraops.config import TrainConfig, load_config
    from loraops.train import train

    result = train(load_config(TrainConfig, CONFIGS, "train", ctx.overrides(*extra)))
    ctx.runs[name] = result.run_dir
    gc.collect()
    return result


def check_precision(ctx: Context) -> Result:
    import torch

    from loraops import environment

    env = environment.detect(True)
    if not ctx.gpus:
        return Result("precision", OK if env.precision == "fp32" else BAD, f"{env.precision} on the CPU")
    major, minor = torch.cuda.get_device_capability(0)
    expected = "bf16" if major >= 8 else "fp16"
    figure = f"{env.precision} on {torch.cuda.get_device_name(0)} (sm{major}{minor})"
    return Result("precision", OK if env.precision == expected else BAD, figure, f"expected {expected}")


def check_default_training(ctx: Context) -> Result:
    from safetensors.torch import load_file

    result = _train(ctx, "default")
    first, last = result.metrics.first_logged_loss or 0.0, result.metrics.final_logged_loss or 0.0
    adapter = load_file(str(result.run_dir / "model" / "adapter_model.safetensors"))
    moved = max(float(t.abs().max()) for k, t in adapter.items() if "lora_B" in k)  # B starts at zero
    status = OK if last < first and moved > 0 else BAD
    return Result("default training", status, f"loss {first:.3f} -> {last:.3f}, largest lora_B weight {moved:.1e}")


def _flops_per_token(ctx: Context) -> float:
    """4 per frozen linear parameter (forward, backward to the inputs) and 6 per LoRA parameter, per token."""
    from loraops.config import TrainConfig, load_config
    from loraops.models import resolve_model_path
    from loraops.shapes import model_shape

    cfg = load_config(TrainConfig, CONFIGS, "train", ctx.overrides())
    shape = model_shape(resolve_model_path(ctx.model), cfg)
    return 4 * shape.linear_params + 6 * shape.trainable


def _peak_flops(ctx: Context) -> tuple[float, float | None]:
    """(a bf16 matrix product's rate measured now, the data sheet's peak or None), FLOP/s."""
    import torch

    from loraops.environment import matmul_rate

    if not ctx.gpus:
        return matmul_rate("cpu", torch.float32, 1024, 0.3), None
    name = torch.cuda.get_device_name(0)
    sheet = next((tflops * 1e12 for key, tflops in DATASHEET_TFLOPS if key in name), None)
    dtype = torch.bfloat16 if torch.cuda.get_device_capability(0) >= (8, 0) else torch.float16
    return matmul_rate("cuda", dtype, 8192, 1.0), sheet


def check_throughput(ctx: Context) -> list[Result]:
    from loraops.runs import RunDir

    per_token, (measured, sheet) = _flops_per_token(ctx), _peak_flops(ctx)
    variants: list[tuple[str, list[str], str | None]] = [
        ("throughput, defaults", [], None),
        ("throughput, packing", ["packing=true"], None),
        (
            "throughput, flash attention + packing",
            ["packing=true", "attn_implementation=flash_attention_2"],
            "flash_attn",
        ),
        ("throughput, Liger kernels", ["liger_kernel=true"], "liger_kernel"),
    ]
    results = []
    for name, extra, module in variants:
        if module and (not ctx.gpus or not _installed(module)):
            results.append(_skip(name, f"needs a GPU and {module}"))
            continue
        run = _train(ctx, name, *extra).run_dir if extra else ctx.runs["default"]
        tokens = RunDir(run).read_metrics().tokens_per_second or 0.0
        achieved = tokens * per_token
        figure = (
            f"{tokens:.0f} real tokens/s = {achieved / 1e12:.2f} TFLOP/s, {100 * achieved / measured:.0f}% of a matmul"
        )
        figure += f", MFU {100 * achieved / sheet:.1f}% of the data sheet" if sheet else ""
        results.append(Result(name, OK if tokens else BAD, figure))
    return results


def check_qlora(ctx: Context) -> Result:
    if not ctx.gpus or not _installed("bitsandbytes"):
        return _skip("QLoRA (4-bit base)", "needs a GPU and bitsandbytes")
    result = _train(ctx, "qlora", "load_in_4bit=true")
    first, last = result.metrics.first_logged_loss or 0.0, result.metrics.final_logged_loss or 0.0
    return Result("QLoRA (4-bit base)", OK if last < first else BAD, f"loss {first:.3f} -> {last:.3f}")


def check_estimate(ctx: Context) -> list[Result]:
    """`check`'s predicted peak against the CUDA allocator's, and its epoch time against the run's."""
    if not ctx.gpus:
        return [_skip("memory estimate", "needs CUDA's allocator statistics"), _skip("time estimate", "needs a GPU")]
    import torch

    from loraops.config import TrainConfig, load_config
    from loraops.data.prepare import prepare_data
    from loraops.estimate import for_training
    from loraops.loading import load_tokenizer
    from loraops.models import resolve_model_path

    cfg = load_config(TrainConfig, CONFIGS, "train", ctx.overrides())
    path = resolve_model_path(cfg.model_name)
    estimate = for_training(cfg, path, prepare_data(cfg, load_tokenizer(path), path).rows)
    if estimate is None:
        return [_skip("memory estimate", "the model's shape is unknown to the estimate")]
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = _train(ctx, "estimate")
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    tensors = estimate.peak - estimate.runtime - estimate.allocator  # what the allocator hands out
    ratio = tensors / allocated
    memory = Result(
        "memory estimate",
        OK if 0.75 <= ratio <= 1.25 else BAD,
        f"predicted {tensors / 2**30:.2f} GiB, allocated {allocated / 2**30:.2f} GiB ({ratio:.2f}x); "
        f"reserved {reserved / 2**30:.2f} GiB (allocator slack {(reserved - allocated) / max(1, allocated):.2f}x)",
    )
    epochs = estimate.epochs if cfg.max_steps <= 0 else cfg.max_steps / estimate.plan.steps_per_epoch
    predicted, took = estimate.seconds_per_epoch * epochs, result.metrics.runtime_s or 0.0
    timing = Result(
        "time estimate",
        OK if took and 0.5 <= predicted / took <= 2 else BAD,
        f"predicted {predicted:.1f} s, took {took:.1f} s ({predicted / max(took, 1e-9):.2f}x)",
    )
    return [memory, timing]


# --- the model's numbers -----------------------------------------------------------------------------


def _loaded(ctx: Context, run: Path | None = None, four_bit: bool = False) -> tuple[Any, Any, Any]:
    from loraops import environment
    from loraops.loading import load_for_inference
    from loraops.models import resolve_model_path

    env = environment.detect(True)
    adapter = run / "model" if run else None
    model, tokenizer = load_for_inference(resolve_model_path(ctx.model), adapter, env, True, four_bit)
    return model, tokenizer, env


def check_packed_loss(ctx: Context) -> Result:
    """Each example's loss packed with others equals its loss alone (sdpa, or flash attention's varlen path)."""
    import torch
    import torch.nn.functional as F

    from loraops.data.packing import PackedCollator, pack_rows
    from loraops.data.tokenize import IGNORE_INDEX, encode
    from loraops.eval.data import load_split

    model, tokenizer, env = _loaded(ctx)
    examples = load_split(DATA / "eval" / "dev.jsonl")[:6]
    rows = [
        {"input_ids": e.input_ids, "labels": e.labels}
        for e in (encode(tokenizer, [*x.prompt, {"role": "assistant", "content": x.reference}], 256) for x in examples)
    ]
    device = next(model.parameters()).device
    flash = "flash" in str(getattr(model.config, "_attn_implementation", ""))
    batch = PackedCollator(tokenizer.pad_token_id, None, flash)(pack_rows(rows, sum(len(r["input_ids"]) for r in rows)))
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device), use_cache=False
        ).logits.float()[0]
    ids, worst = batch["input_ids"][0].tolist(), 0.0
    for row in rows:  # packing reorders the examples (best fit): each is found by its tokens
        n, labels = len(row["input_ids"]), torch.tensor(row["labels"], device=device)
        start = next(i for i in range(len(ids) - n + 1) if ids[i : i + n] == row["input_ids"])
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([row["input_ids"]], device=device)).logits.float()[0]
        losses = [
            F.cross_entropy(x[:-1], labels[1:], ignore_index=IGNORE_INDEX) for x in (alone, logits[start : start + n])
        ]
        worst = max(worst, abs(float(losses[0] - losses[1])) / max(float(losses[0]), 1e-6))
    tolerance = 1e-4 if env.precision == "fp32" else 2e-2
    status = OK if worst <= tolerance else BAD
    return Result(
        "packed = alone, loss per example", status, f"largest relative difference {worst:.1e} ({env.precision})"
    )


def check_eval(ctx: Context) -> list[Result]:
    from loraops.config import EvalConfig, load_config
    from loraops.eval.evaluate import evaluate

    results = []
    for name, extra in (("eval", []), ("eval on the 4-bit base", ["load_in_4bit=true"])):
        if extra and (not ctx.gpus or not _installed("bitsandbytes")):
            results.append(_skip(name, "needs a GPU and bitsandbytes"))
            continue
        overrides = [
            f"model={ctx.runs['default']}",
            f"eval_dir={DATA / 'eval'}",
            "splits=[test]",
            "limit=16",
            "max_new_tokens=24",
            f"metrics_dir={ctx.work / 'metrics' / name.replace(' ', '-')}",
            *extra,
        ]
        scores = evaluate(load_config(EvalConfig, CONFIGS, "eval", overrides)).metrics["test"]
        figure = f"exact match {scores['exact_match']:.1f}% on {scores['n']}, {scores['generation_s']:.1f} s"
        results.append(Result(name, OK, figure))
    return results


def check_kv_cache(ctx: Context) -> Result:
    """The static KV cache (compiled decoding on CUDA) against the dynamic one, each timed after a warm-up."""
    from loraops.eval.data import load_split
    from loraops.eval.generate import GenerationSettings, generate

    model, tokenizer, _ = _loaded(ctx, ctx.runs["default"])
    prompts = [e.prompt for e in load_split(DATA / "eval" / "test.jsonl")][:16]
    settings, rates, texts = GenerationSettings(max_new_tokens=32), {}, {}
    for cache in ("dynamic", "static"):
        model.generation_config.cache_implementation = None if cache == "dynamic" else "static"
        generate(model, tokenizer, prompts, settings, batch_size=16, progress=False)  # compiles, if anything
        started = time.perf_counter()
        outputs = generate(model, tokenizer, prompts, settings, batch_size=16, progress=False)
        rates[cache] = sum(o.new_tokens for o in outputs) / (time.perf_counter() - started)
        texts[cache] = [o.text for o in outputs]
    same = sum(a == b for a, b in zip(texts["dynamic"], texts["static"]))
    ratio = rates["static"] / rates["dynamic"]
    figure = f"static {rates['static']:.0f} vs dynamic {rates['dynamic']:.0f} tokens/s ({ratio:.2f}x)"
    return Result(
        "KV cache, static vs dynamic", OK if same == len(prompts) else BAD, f"{figure}, {same}/{len(prompts)} same"
    )


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join()


def check_serve(ctx: Context) -> Result:
    from loraops.inference import ChatModel
    from loraops.serve.app import create_app

    model = ChatModel.load(str(ctx.runs["default"]))
    device = next(model.model.parameters()).device
    body = {"model": model.name, "messages": [{"role": "user", "content": "Sum of A1:A9?"}], "max_tokens": 16}
    with _serving(create_app(model)) as url:
        request = urllib.request.Request(
            url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        took = time.perf_counter() - started
    expected = "cuda" if ctx.gpus else "cpu"
    ok = device.type == expected and bool(answer["choices"][0]["message"]["content"])
    return Result("serve", OK if ok else BAD, f"answered in {took:.2f} s on {device}")


# --- several GPUs ------------------------------------------------------------------------------------


def _launched(ctx: Context, name: str, *extra: str) -> tuple[int, Path | None, str]:
    """`loraops train` in its own process, as a user runs it: exit status, run folder, the error's last lines."""
    runs = ctx.work / "launched" / name.replace(" ", "-")
    overrides = [o for o in ctx.overrides(*extra) if not o.startswith("output_dir=")] + [f"output_dir={runs}"]
    command = [sys.executable, "-m", "loraops", "train", "--config-dir", str(CONFIGS), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    made = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()] if runs.is_dir() else []
    return done.returncode, (made[0] if made else None), "\n".join(done.stderr.strip().splitlines()[-3:])


def check_several_gpus(ctx: Context) -> list[Result]:
    from loraops.runs import RunDir

    variants: list[tuple[str, list[str], str | None]] = [
        ("DDP, 2 processes", ["num_processes=2"], None),
        (
            "FSDP, 2 processes, validation",
            [
                "num_processes=2",
                "accelerate_config=fsdp",
                "eval_strategy=steps",
                f"eval_steps={max(1, ctx.steps // 2)}",
                "val_metrics=[]",
            ],
            None,
        ),
        (
            "QLoRA + FSDP",
            ["num_processes=2", "accelerate_config=fsdp", "load_in_4bit=true", "val_metrics=[]"],
            "bitsandbytes",
        ),
        (
            "ZeRO-3, 2 processes",
            ["num_processes=2", "accelerate_config=deepspeed_zero3", "val_metrics=[]"],
            "deepspeed",
        ),
        ("cuda_visible_devices=1", ["cuda_visible_devices='1'", "num_processes=1"], None),
    ]
    results = []
    for name, extra, module in variants:
        if ctx.gpus < 2 or (module and not _installed(module)):
            results.append(_skip(name, "needs 2 GPUs" + (f" and {module}" if module else "")))
            continue
        code, run, error = _launched(ctx, name, *extra)
        if run is None or not RunDir(run).is_finished():
            results.append(Result(name, BAD, f"exit {code}", error))
            continue
        figure = f"exit {code}, {RunDir(run).read_metrics().tokens_per_second or 0:.0f} tokens/s"
        ok = code == 0
        if name.startswith("cuda_visible_devices"):
            seen = RunDir(run).read_manifest().environment.get("cuda_visible_devices")
            ok, figure = ok and seen == "1", f"{figure}, the run saw CUDA_VISIBLE_DEVICES={seen}"
        results.append(Result(name, OK if ok else BAD, figure))
    return results


CHECKS: list[Callable[[Context], Result | list[Result]]] = [
    check_precision,
    check_default_training,
    check_throughput,
    check_qlora,
    check_estimate,
    check_packed_loss,
    check_eval,
    check_kv_cache,
    check_serve,
    check_several_gpus,
]


# --- running, reporting ------------------------------------------------------------------------------


def _tiny_model(folder: Path) -> str:
    """A 2-layer random Llama with the default model's tokenizer and chat template: the plumbing's model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from loraops.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("default"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_checks(ctx: Context) -> list[Result]:
    results: list[Result] = []
    for check in CHECKS:
        try:
            found = check(ctx)
        except Exception as exc:  # one check's failure is its BAD line; the others still run
            detail = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1][:300]
            found = Result(check.__name__.removeprefix("check_").replace("_", " "), BAD, "-", detail)
        for result in found if isinstance(found, list) else [found]:
            results.append(result)
            print(
                f"{result.status:<5}{result.check:<42}{result.figure}"
                + (f"  ({result.detail})" if result.detail else "")
            )
        sys.stdout.flush()
        gc.collect()
    return results


def markdown(results: list[Result], machine: str) -> str:
    lines = [f"`make gpu-check` on {machine}:", "", "| check | result | measured |", "| --- | --- | --- |"]
    cell = lambda text: text.replace("|", "/")  # noqa: E731  (a table cell cannot hold a pipe)
    lines += [
        f"| {r.check} | {r.status} | {cell(r.figure + (f' ({r.detail})' if r.detail else ''))} |" for r in results
    ]
    return "\n".join(lines) + "\n"


def _machine(ctx: Context) -> str:
    import platform

    import torch

    if not ctx.gpus:
        return f"CPU ({platform.machine()}), plumbing mode: a tiny random model"
    return f"{ctx.gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plumbing", action="store_true", help="on the CPU with a tiny random model (CI)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each training run")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "gpu-check")
    args = parser.parse_args()

    from loraops import environment

    gpus = 0 if args.plumbing else environment.gpu_count()
    if not gpus and not args.plumbing:
        print("gpu-check: no CUDA GPU here; --plumbing runs the checks on the CPU", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="loraops-gpu-check-"))
    try:
        model = _tiny_model(work / "tiny-model") if args.plumbing else "default"
        ctx = Context(args.plumbing, 4 if args.plumbing else args.steps, work, model, gpus)
        results = run_checks(ctx)
        machine = _machine(ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(
        json.dumps({"machine": machine, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    (args.out / "gpu_check.md").write_text(markdown(results, machine))
    print(f"results: {args.out / 'gpu_check.json'} and gpu_check.md")
    return 1 if any(r.status == BAD for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

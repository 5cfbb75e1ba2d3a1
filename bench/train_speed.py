#!/usr/bin/env python3
"""Training speed of loraops against the plain Trainer + PEFT recipe and TRL's SFTTrainer, side by side.

One command, one machine, one after another: the same model (the embedded default), the same data
(the sample files, through loraops' data step), the same LoRA settings (r16, alpha 32, no dropout,
the seven projections; one loraops row with dropout 0.05 shows what dropout costs), the same number
of optimizer steps of the same batch size, fp32 on CPU.
Each trainer runs in its own process so its peak memory is its own. Tokens are counted identically
for everyone, from the batches the collator hands the model: real tokens (attention mask 1, or every
token of a packed row but its padding, found by position), supervised tokens (labels not -100), and the padding share.
A matrix-product peak is measured in the same run, and loraops' share of it is estimated at 4 FLOPs
per parameter per real token (forward, and backward through the frozen weights).

    .venv/bin/python bench/train_speed.py [--steps 20] [--batch-size 8] [--only loraops,trl]
    make bench-train
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRAINERS = {
    "loraops": "loraops (defaults)",
    "loraops-full-head": "loraops, labelled_logits_only=false",
    "loraops-dropout": "loraops, lora_dropout=0.05",
    "loraops-packing": "loraops, packing=true",
    "loraops-compile": "loraops, torch_compile=true",
    "plain": "Trainer + PEFT, padded to max_length",
    "trl": "TRL SFTTrainer",
    "trl-packing": "TRL SFTTrainer, packing",
}
LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,  # loraops' default; the loraops-dropout row shows 0.05
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LR, MAX_LENGTH, SEED = 5e-4, 256, 42


class Meter:
    """Counts what each batch feeds the model, and times training from its first to its last step."""

    def __init__(self) -> None:
        self.real = self.supervised = self.slots = 0
        self.started = self.ended = 0.0

    def wrap(self, collator: Any, pad_token_id: int | None) -> Any:
        from loraops.data.packing import real_token_mask

        def counted(features: list[Any]) -> Any:
            batch = collator(features)
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            if mask is None and "position_ids" in batch and "labels" in batch:  # packed rows: padding by position
                mask = real_token_mask(batch, pad_token_id if pad_token_id is not None else -1)
            self.real += int(mask.sum()) if mask is not None else int(ids.numel())
            self.slots += int(ids.numel())
            if "labels" in batch:
                self.supervised += int((batch["labels"][:, 1:] != -100).sum())
            return batch

        return counted

    def callback(self) -> Any:
        from transformers import TrainerCallback

        meter = self

        class Timer(TrainerCallback):
            def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
                meter.started = time.perf_counter()

            def on_train_end(self, *args: Any, **kwargs: Any) -> None:
                meter.ended = time.perf_counter()

        return Timer()


def sample_examples() -> tuple[Any, list[Any], str]:
    from loraops.config import TrainConfig
    from loraops.data.prepare import prepare_data
    from loraops.loading import load_tokenizer
    from loraops.models import resolve_model_path

    path = resolve_model_path("default")
    tokenizer = load_tokenizer(path)
    cfg = TrainConfig(val_path=None)
    return tokenizer, prepare_data(cfg, tokenizer, path).examples, path


def args_for(out: str, steps: int, batch: int) -> dict[str, Any]:
    return {
        "output_dir": out,
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "learning_rate": LR,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 5,
        "seed": SEED,
        "disable_tqdm": True,
    }


def run_loraops(name: str, steps: int, batch: int, meter: Meter) -> None:
    import loraops.train as loraops_train
    from loraops.config import TrainConfig, load_config

    base = loraops_train.LoraopsTrainer

    class Measured(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["data_collator"] = meter.wrap(kwargs["data_collator"], kwargs["processing_class"].pad_token_id)
            super().__init__(*args, **kwargs)
            self.add_callback(meter.callback())

    loraops_train.LoraopsTrainer = Measured  # type: ignore[misc]
    extra = {
        "loraops-full-head": ["labelled_logits_only=false"],
        "loraops-dropout": ["lora_dropout=0.05"],
        "loraops-packing": ["packing=true"],
        "loraops-compile": ["torch_compile=true"],
    }.get(name, [])
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            TrainConfig,
            Path("configs"),
            "train",
            [
                f"max_steps={steps}",
                f"batch_size={batch}",
                "eval_strategy=no",
                f"output_dir={out}",
                "save_strategy=no",
                *extra,
            ],
        )
        loraops_train.train(cfg)


def run_plain(steps: int, batch: int, meter: Meter) -> None:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

    tokenizer, examples, path = sample_examples()
    texts = [tokenizer.apply_chat_template(e.messages, tokenize=False) for e in examples]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH),
        batched=True,
        remove_columns=["text"],
    )
    set_seed(SEED)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(task_type="CAUSAL_LM", **LORA))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**args_for(out, steps, batch)),
            train_dataset=data,
            data_collator=meter.wrap(DataCollatorForLanguageModeling(tokenizer, mlm=False), tokenizer.pad_token_id),
            callbacks=[meter.callback()],
        )
        trainer.train()


def run_trl(packing: bool, steps: int, batch: int, meter: Meter) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    tokenizer, examples, path = sample_examples()
    rows = [{"prompt": e.messages[:-1], "completion": e.messages[-1:]} for e in examples]
    set_seed(SEED)
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(**args_for(out, steps, batch), max_length=MAX_LENGTH, packing=packing)
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(path),
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
            callbacks=[meter.callback()],
        )
        trainer.data_collator = meter.wrap(trainer.data_collator, tokenizer.pad_token_id)
        trainer.train()


def one(name: str, steps: int, batch: int) -> dict[str, Any]:
    """Train with one trainer in this process; its figures."""
    meter = Meter()
    if name.startswith("loraops"):
        run_loraops(name, steps, batch, meter)
    elif name == "plain":
        run_plain(steps, batch, meter)
    else:
        run_trl(name == "trl-packing", steps, batch, meter)
    seconds = meter.ended - meter.started
    return {
        "real_tps": meter.real / seconds,
        "supervised_tps": meter.supervised / seconds,
        "padding": 1 - meter.real / max(1, meter.slots),
        "seconds": seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def matmul_peak(seconds: float = 3.0, n: int = 2048) -> float:
    """fp32 GFLOP/s of a square matrix product on the CPU, best of repeated runs (the rate `check` times too)."""
    import torch

    from loraops.environment import matmul_rate

    return matmul_rate("cpu", torch.float32, n, seconds) / 1e9


def table(results: dict[str, dict[str, Any]], peak: float, params: float) -> str:
    ours = results.get("loraops")
    lines = [
        "| trainer | real tokens/s | supervised tokens/s | padding | peak RSS | loraops' speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        ratio = f"{ours['real_tps'] / r['real_tps']:.2f}x" if ours and name != "loraops" else "-"
        lines.append(
            f"| {TRAINERS[name]} | {r['real_tps']:.0f} | {r['supervised_tps']:.0f} | {100 * r['padding']:.0f}% "
            f"| {r['peak_rss_gb']:.1f} GB | {ratio} |"
        )
    lines.append(f"\nmatmul peak (fp32, 2048^3): {peak:.0f} GFLOP/s")
    if ours:
        flops = ours["real_tps"] * 4 * params / 1e9
        lines.append(
            f"loraops: {flops:.0f} GFLOP/s at 4 x {params / 1e6:.1f}M FLOPs per real token = "
            f"{100 * flops / peak:.0f}% of the matmul peak"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", default=",".join(TRAINERS), help="comma-separated: " + ", ".join(TRAINERS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one trainer, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.steps, args.batch_size)))
        return 0
    peak = matmul_peak()
    results = {}
    for name in args.only.split(","):
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not found:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(found[-1][len("RESULT ") :])
        print(f"{TRAINERS[name]}: {results[name]['real_tps']:.0f} real tokens/s", file=sys.stderr)
    print(f"{args.steps} optimizer steps of {args.batch_size} examples each, fp32, on this machine:\n")
    print(table(results, peak, 134.5e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())

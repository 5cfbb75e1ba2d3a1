"""Helpers the tests share: data files, the one fake of a run folder, the one fake of eval records, and the
small models built around the real default tokenizer. Fixtures live in conftest.py; plain functions here."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loraops.config import CompareConfig
from loraops.eval.metrics import example_scores
from loraops.eval.records import MetricsRecords
from loraops.eval.scoring import split_metrics
from loraops.eval.targets import baseline_name
from loraops.records import (
    EvalSummary,
    EvalTargetRecord,
    Manifest,
    Prediction,
    RunMetrics,
    SplitRecord,
)
from loraops.runs import RunDir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
HUB_TOKEN = "hf_" + "FakeSecretToken0123456789abcdefXYZ"  # split: no token-shaped literal in git
HUB_REPO = "tester/tabula-adapter"

PC_RECORDS = [
    {"prompt": f"Rolling sum of A1:A{n} over {n % 7 + 2}", "completion": f"=FLOWROLL(A1:A{n}, {n % 7 + 2})"}
    for n in range(10, 26)
]
EVAL_PROMPTS = [[{"role": "user", "content": "word " * n + "end"}] for n in (1, 9, 3, 17, 5, 2, 12, 7)]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def save_random_llama(
    path: Path, tokenizer: Any, hidden: int, intermediate: int, layers: int, context: int = 512
) -> Path:
    """A randomly initialised Llama of the given size with the real tokenizer and chat template, saved at `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- the one fake of a run folder -----------------------------------------------------------------

# What a finished run records, for tests that read a run's records (publish, cards, reports).
TRAINED_CONFIG = {
    "model_name": "default",
    "dataset_path": "/home/alice/private/data",
    "dataset_pattern": "*.jsonl",
    "epochs": 2,
    "max_steps": -1,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "lr": 0.005,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "max_length": 256,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "v_proj", "down_proj"],
    "seed": 42,
    "output_dir": "outputs/runs",
}
TRAINED_METRICS = {
    "train_loss": 0.3,
    "first_logged_loss": 2.6,
    "final_logged_loss": 0.01,
    "global_steps": 8,
    "epochs_completed": 2.0,
    "precision": "fp32",
    "device": "CPU",
    "data": {
        "records": 16,
        "examples": 16,
        "truncated": 0,
        "dropped_all_masked": 0,
        "tokens": 900,
        "trained_tokens": 200,
        "formats": {"prompt_completion": 16},
    },
}


def private_manifest(model_name: str = "default") -> dict[str, Any]:
    """A manifest whose data files sit in a private folder: nothing of it may be published."""
    files = [{"name": "train.jsonl", "path": "/home/alice/private/data/train.jsonl", "sha256": "a" * 64}]
    return {"model_name": model_name, "data": {"files": files, "dataset_sha256": "b" * 64}}


def make_run(
    root: Path,
    name: str,
    *,
    model_name: str = "default",
    adapter_dir: Path | None = None,
    status: str = "finished",
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """A run folder written through RunDir, as `loraops train` leaves it; the adapter is copied if given."""
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    if adapter_dir is not None:
        shutil.copytree(adapter_dir, run.model_dir)
    else:
        run.model_dir.mkdir()
    run.write_config({**(config or {}), "model_name": model_name})
    record = {"model_name": model_name, **(manifest or {})}
    run.write_manifest(Manifest.model_validate({**record, "status": status}))
    if metrics is not None:
        run.write_metrics(RunMetrics.model_validate(metrics))
    return run.path


def finished_run(root: Path, name: str, adapter_dir: Path, model_name: str = "default") -> Path:
    """A finished run with realistic records, a real (tiny) adapter and PEFT's own generic card beside it."""
    run = make_run(
        root / "runs",
        name,
        model_name=model_name,
        adapter_dir=adapter_dir,
        config=TRAINED_CONFIG,
        metrics=TRAINED_METRICS,
        manifest=private_manifest(model_name),
    )
    (run / "model" / "README.md").write_text("PEFT's generic card\n")
    return run


# --- the one fake of eval records -----------------------------------------------------------------


def fake_metrics(
    metrics_dir: Path,
    name: str,
    exact: dict[str, float | list[bool]],
    n: int = 32,
    wrong_answer: str = "I do not know",
    **fingerprint: Any,
) -> None:
    """Eval records as `loraops eval` writes them: per split, `n` examples, the first ones answered right
    (a share in %, or a list saying which), the others with `wrong_answer`, scored by loraops' own scorer,
    with a fingerprint that matches any other call's by default."""
    records = MetricsRecords.of(metrics_dir, name)
    target = EvalTargetRecord(name=name, base_model="default")
    summary = {}
    for split, value in exact.items():
        right = value if isinstance(value, list) else [i < round(value / 100 * n) for i in range(n)]
        rows = [_row(split, i, ok, wrong_answer) for i, ok in enumerate(right)]
        metrics = split_metrics(rows, "13a")
        print_ = {
            "examples_sha256": sha256_of([row.id for row in rows]),
            "n": len(right),
            "generation": {"max_new_tokens": 64},
            "scoring": {"words": "unicode-words-1", "bleu_tokenize": "13a"},
            "base_model": {"name": "default", "revision": "r"},
            "tokenizer_sha256": "t",
            "chat_template_sha256": "c",
        } | fingerprint
        settings = {"eval_dir": "data/eval", "limit": None, "max_new_tokens": 64, "do_sample": False, "seed": 42}
        record = SplitRecord(split=split, model=target, metrics=metrics, fingerprint=print_, settings=settings)
        records.write_split(record, rows)
        summary[split] = metrics
    records.write_summary(EvalSummary(model=target, metrics={**summary, "overall": {}}))


def sha256_of(value: Any) -> str:
    """How eval's fingerprints hash a JSON value (the records' format, restated)."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def _row(split: str, i: int, right: bool, wrong_answer: str) -> Prediction:
    reference = f"=FLOWROLL(A1:A{i + 9}, {i % 5 + 2})"
    prediction = reference if right else wrong_answer
    messages = [{"role": "user", "content": f"question {i}"}]
    return Prediction(
        id=sha256_of([messages, reference])[:16],  # as eval names an example: by what it asks and expects
        path=f"data/eval/{split}.jsonl",
        line=i + 1,
        prompt=f"question {i}",
        messages=messages,
        reference=reference,
        prediction=prediction,
        scores=example_scores(prediction, reference, "13a"),
    )


def evaluated(tmp_path: Path, run: Path, tuned: float, base: float | None, model_name: str = "default") -> None:
    """Eval records of the run (`tuned`% right on test) and, unless `base` is None, of its base model."""
    fake_metrics(tmp_path / "m", run.name, {"test": tuned, "dev": tuned / 2})
    if base is not None:
        fake_metrics(tmp_path / "m", baseline_name(model_name), {"test": base, "dev": base})


def compare_cfg(tmp_path: Path, **keys: Any) -> CompareConfig:
    """compare's settings over the folders `evaluated` fills; fake metrics hold no answers to regenerate, so
    publish skips its proof (test_publish_verify.py checks that step on real ones)."""
    values = {"artifacts_dir": str(tmp_path / "artifacts"), "metrics_dir": str(tmp_path / "m"), "verify_samples": 0}
    return CompareConfig.model_validate(values | keys)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app on uvicorn in a thread, on a free port of 127.0.0.1; yields its /v1 base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join()

"""The MLflow sequence test_tracking.py runs against the embedded store and test_tracking_server.py against a
real `mlflow server`: train -> eval -> eval of the base model -> compare -> publish, and what it must leave."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import CONFIGS, write_jsonl

from loraops.config import CompareConfig, EvalConfig, TrainConfig, load_config
from loraops.eval.compare import compare
from loraops.eval.evaluate import evaluate
from loraops.publish import publish_local
from loraops.reference import read_reference
from loraops.runs import RunDir
from loraops.tracking.store import embedded_uri
from loraops.train import train

CANARY = "canary-7Hq2xZp9-do-not-log"  # a secret value that must appear nowhere in the tracking store


def client(uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri or embedded_uri())


@dataclass
class Sequence:
    run: Path
    metrics_dir: Path
    compare_cfg: CompareConfig


def eval_set(folder: Path) -> Path:
    write_jsonl(
        folder / "test.jsonl",
        [{"prompt": f"Rolling sum of A1:A{n}", "completion": f"=FLOWROLL(A1:A{n}, 2)"} for n in range(5, 11)],
    )
    return folder


def run_sequence(tmp_path: Path, tiny_overrides: list[str], *train_extra: str) -> Sequence:
    """train -> eval -> eval of the base model -> compare -> publish (forced: a random tiny model rarely improves)."""
    tracked = ["tracking=mlflow"]
    quick = [o for o in tiny_overrides if not o.startswith("batch_size=")] + [
        "batch_size=8",
        "val_fraction=0.25",
        "val_metrics=[]",
    ]
    run = train(load_config(TrainConfig, CONFIGS, "train", [*quick, *tracked, *train_extra])).run_dir
    metrics_dir = tmp_path / "metrics"
    evals = [
        f"model={run}",
        f"eval_dir={eval_set(tmp_path / 'evalsets')}",
        f"metrics_dir={metrics_dir}",
        "max_new_tokens=4",
        "batch_size=8",
        *tracked,
    ]
    evaluate(load_config(EvalConfig, CONFIGS, "eval", evals))
    evaluate(load_config(EvalConfig, CONFIGS, "eval_baseline", evals))
    cfg = load_config(
        CompareConfig,
        CONFIGS,
        "compare",
        [
            f"run={run}",
            f"artifacts_dir={tmp_path / 'artifacts'}",
            f"metrics_dir={metrics_dir}",
            "verify_samples=0",
            "bootstrap_resamples=100",
            *tracked,
        ],
    )
    compare(cfg)
    publish_local(str(run), force=True, compare_cfg=cfg)
    return Sequence(run, metrics_dir, cfg)


def training_runs(mlflow: Any, experiment: str = "loraops") -> list[Any]:
    found = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([found.experiment_id], "tags.`loraops.kind` = 'training'")


def artifact_paths(mlflow: Any, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in mlflow.list_artifacts(run_id, path):
        paths |= artifact_paths(mlflow, run_id, item.path) if item.is_dir else {item.path}
    return paths


def check_sequence(mlflow: Any, seq: Sequence) -> Any:
    """One MLflow run holds the training run, its eval, its verdict and its publication; returns it."""
    run = RunDir(seq.run)
    [tracked] = training_runs(mlflow)
    link = json.loads(run.tracking_path.read_text())
    assert tracked.info.run_id == link["run_id"] and link["complete"] and tracked.info.run_name == run.name
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["lr"] == "0.005" and params["lora_r"] == "4" and params["data_source.type"] == "local"
    assert params["tracking"] == "mlflow" and params["lora_target_modules"].startswith('["q_proj"')
    steps = run.read_metrics().global_steps or 0
    loss = mlflow.get_metric_history(tracked.info.run_id, "train/loss")
    assert sorted(m.step for m in loss) == list(range(1, steps + 1))  # logging_steps=1: every step
    for key in (
        "train/learning_rate",
        "train/grad_norm",
        "val/loss",
        "eval/test/exact_match",
        "eval/test/rougeL",
        "summary/train_loss",
        "compare/test/exact_match/delta",
        "compare/test/exact_match/p",
    ):
        assert key in tracked.data.metrics, key
    assert len(mlflow.get_metric_history(tracked.info.run_id, "val/loss")) == 2  # one per epoch
    comparison = json.loads((seq.metrics_dir / run.name / "comparison.json").read_text())
    tags = tracked.data.tags
    assert tags["loraops.verdict"] == comparison["verdict"] and tags["loraops.compared_with_kind"] == "base"
    manifest = run.read_manifest()
    assert tags["data.dataset_sha256"] == manifest.data.dataset_sha256 and tags["data.source.type"] == "local"
    assert tags.get("git.commit") == manifest.git.commit or manifest.git.commit is None
    paths = artifact_paths(mlflow, tracked.info.run_id)
    assert {
        "config_used.yaml",
        "manifest.json",
        "metrics.json",
        "model/adapter_model.safetensors",
        "model/adapter_config.json",
        "eval/test.json",
        "eval/test.predictions.jsonl",
        "compare/comparison.json",
        "published/README.md",
    } <= paths
    return tracked


def check_champion(mlflow: Any, seq: Sequence, tracked: Any) -> None:
    name = f"loraops-{Path(RunDir(seq.run).base_model()).name}"
    version = mlflow.get_model_version_by_alias(name, "champion")
    assert version.run_id == tracked.info.run_id and version.source == f"runs:/{tracked.info.run_id}/published/model"
    assert version.tags["loraops.run"] == RunDir(seq.run).name and version.tags["loraops.forced"] == "true"
    assert version.tags["loraops.destination"].startswith("local:") and "Published with --force" in version.description
    local = read_reference(seq.compare_cfg.reference_path)
    assert local is not None and local.registry is not None
    assert local.registry.model_dump() == {"model": name, "version": str(version.version), "alias": "champion"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def evaluated_answers(seq: Sequence) -> list[tuple[list[dict[str, str]], str]]:
    """(messages, prediction) of every example eval scored on the test split."""
    path = seq.metrics_dir / RunDir(seq.run).name / "test.predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(row["messages"], row["prediction"]) for row in rows]

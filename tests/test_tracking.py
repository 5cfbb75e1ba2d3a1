"""tracking=mlflow: one MLflow run per training run, with its evals, verdict, artifacts and registered versions.

Against the embedded store (a SQLite file under a temporary project folder); tests/test_tracking_server.py
runs the same sequence against a real `mlflow server`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, compare_cfg, evaluated, fake_metrics, finished_run, make_run
from support import HUB_REPO as REPO
from support import HUB_TOKEN as TOKEN
from tracking_sequence import (
    CANARY,
    artifact_paths,
    check_champion,
    check_sequence,
    client,
    closed_port,
    evaluated_answers,
    run_sequence,
    training_runs,
)

from loraops.config import CompareConfig, EvalConfig, TrainConfig, load_config
from loraops.errors import ConfigError
from loraops.eval.compare import compare
from loraops.eval.targets import baseline_name
from loraops.publish import publish_local
from loraops.records import RunMetrics
from loraops.reference import published_reference
from loraops.runs import RunDir
from loraops.secrets import public_url
from loraops.tracking.importer import import_pulled
from loraops.tracking.records import flatten_params
from loraops.tracking.store import embedded_uri, forwardable_uri
from loraops.train import train


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """A project folder as the working folder, no MLFLOW_TRACKING_URI: the embedded store mlruns/mlflow.db."""
    folder = tmp_path / "project"
    (folder / "mlruns").mkdir(parents=True)
    shutil.copyfile(empty_store, folder / "mlruns" / "mlflow.db")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("HF_TOKEN", CANARY)
    return folder


def test_train_eval_compare_publish_make_one_mlflow_run(
    project: Path, tmp_path: Path, tiny_overrides: list[str], tiny_model_dir: Path
) -> None:
    seq = run_sequence(tmp_path, tiny_overrides, f"system_prompt=Answer briefly. {CANARY}")
    mlflow = client()
    tracked = check_sequence(mlflow, seq)
    assert tracked.data.params["system_prompt"] == "Answer briefly. <redacted>"
    check_champion(mlflow, seq, tracked)
    check_registered_model_answers_as_evaluated(seq)
    baseline = mlflow.search_runs([tracked.info.experiment_id], "tags.`loraops.kind` = 'baseline'")
    assert len(baseline) == 1 and baseline[0].data.tags["base_model"] == str(tiny_model_dir)
    assert "eval/test/exact_match" in baseline[0].data.metrics and baseline[0].info.run_name.startswith("baseline/")
    assert (project / "mlruns" / "mlflow.db").is_file() and (project / "mlruns" / "artifacts").is_dir()

    # compare against=published means the champion, even with the local record gone.
    (tmp_path / "artifacts" / "reference.json").unlink()
    second = Path(make_run(tmp_path / "runs", "2099-01-01_00-00-00", model_name=str(tiny_model_dir)))
    shutil.copytree(seq.metrics_dir / seq.run.name, seq.metrics_dir / second.name)  # scored exactly alike
    result = compare(
        load_config(
            CompareConfig,
            CONFIGS,
            "compare",
            [
                f"run={second}",
                "against=published",
                f"artifacts_dir={tmp_path / 'artifacts'}",
                f"metrics_dir={seq.metrics_dir}",
                "bootstrap_resamples=100",
                "tracking=mlflow",
            ],
        )
    )
    assert (result.reference, result.reference_kind, result.verdict) == (seq.run.name, "published", "NOT IMPROVED")

    # No secret anywhere in the store: not in params, tags or artifacts, not in the database file.
    for path in [project / "mlruns" / "mlflow.db", *(project / "mlruns" / "artifacts").rglob("*")]:
        assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path


def check_registered_model_answers_as_evaluated(seq: Any) -> None:
    """The champion is an MLflow Model: pyfunc loads it (adapter on the base, with the run's system prompt)
    and answers each test prompt greedily as eval did."""
    import mlflow
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    name = f"loraops-{Path(RunDir(seq.run).base_model()).name}"
    mlflow.set_tracking_uri(embedded_uri())  # as a user does, with MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    print(open(seq.metrics_dir / RunDir(seq.run).name / "test.predictions.jsonl").read()[:1500])
    for messages, prediction in evaluated_answers(seq):
        [answer] = model.predict({"messages": messages, "max_tokens": 4})
        assert answer["choices"][0]["message"]["content"].strip() == prediction.strip(), messages
    # A tiny random model's answers say little: the parts are checked too, the adapter's weights and the prompt.
    parts = mlflow.transformers.load_model(f"models:/{name}@champion", return_type="components")
    trained = load_file(seq.run / "model" / "adapter_model.safetensors")
    loaded = {k.replace(".default", ""): v for k, v in get_peft_model_state_dict(parts["model"]).items()}
    assert trained.keys() == loaded.keys() and all(torch.equal(trained[k], loaded[k]) for k in trained)
    prompt = parts["tokenizer"].apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "Answer briefly. <redacted>" in prompt  # the run's system prompt, as its config keeps it


def test_champion_rule_registry_first_local_record_as_fallback(
    project: Path, tmp_path: Path, tiny_adapter_dir: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compare_cfg(tmp_path, tracking="mlflow", bootstrap_resamples=100)
    base = str(tiny_model_dir)
    runs = [
        Path(make_run(tmp_path / "runs", n, model_name=base, adapter_dir=tiny_adapter_dir)) for n in "r1 r2 r3".split()
    ]
    for run, score in zip(runs, (50.0, 80.0, 90.0)):
        fake_metrics(tmp_path / "m", run.name, {"test": score})
    fake_metrics(tmp_path / "m", baseline_name(base), {"test": 0.0})
    name = f"loraops-{tiny_model_dir.name}"  # one registered model per base model
    publish_local(str(runs[0]), compare_cfg=cfg)
    publish_local(str(runs[1]), compare_cfg=cfg)
    mlflow = client()
    assert mlflow.get_model_version_by_alias(name, "champion").version == 2
    assert published_reference(cfg, RunDir(runs[2])).run == "r2"  # type: ignore[union-attr]

    # Someone moves the alias back in the MLflow UI: the registry decides.
    mlflow.set_registered_model_alias(name, "champion", "1")
    assert compare(cfg.model_copy(update={"run": str(runs[2])})).reference == "r1"

    # A publish that did not reach the registry (tracking off): the newer local record wins.
    publish_local(str(runs[2]), compare_cfg=cfg.model_copy(update={"tracking": "tensorboard"}), force=True)
    assert published_reference(cfg, RunDir(runs[0])).run == "r3"  # type: ignore[union-attr]

    # The registry cannot be reached: the local record, and one warning.
    publish_local(str(runs[2]), compare_cfg=cfg, force=True)  # registered this time
    mlflow.set_registered_model_alias(name, "champion", "1")
    assert published_reference(cfg, RunDir(runs[0])).run == "r1"  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
        assert published_reference(cfg, RunDir(runs[0])).run == "r3"  # type: ignore[union-attr]
    assert len([r for r in caplog.records if r.name.startswith("loraops.tracking")]) == 1


def test_tracking_outage_costs_one_warning_never_the_run(
    project: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ana:{CANARY}@127.0.0.1:{closed_port()}")
    overrides = [*tiny_overrides, "max_steps=3", "tracking=both"]
    with caplog.at_level(logging.WARNING):
        run = RunDir(train(load_config(TrainConfig, CONFIGS, "train", overrides)).run_dir)
    assert run.is_finished() and run.metrics_path.is_file() and (run.model_dir / "adapter_model.safetensors").is_file()
    assert run.logs_dir.is_dir()  # tracking=both: TensorBoard still got everything
    warnings = [r for r in caplog.records if r.name.startswith("loraops.tracking")]
    assert len(warnings) == 1 and "going on without it" in warnings[0].getMessage()
    assert CANARY not in caplog.text and "ana:" not in caplog.text and not run.tracking_path.exists()

    # Once the store is back, the next command that uses the run rebuilds its MLflow run from the folder.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    import_pulled(run)
    [tracked] = training_runs(client())
    assert tracked.info.run_name == run.name and tracked.info.status == "FINISHED"
    assert len(client().get_metric_history(tracked.info.run_id, "train/loss")) == 3


def test_pulled_run_is_imported_once_and_later_pulls_add_to_it(
    project: Path, tmp_path: Path, tiny_adapter_dir: Path
) -> None:
    metrics = {
        "global_steps": 4,
        "train_loss": 1.5,
        "loss_history": [{"step": s, "loss": 3.0 - s / 2, "learning_rate": 1e-3} for s in (1, 2, 3, 4)],
        "validation": {
            "curve": [
                {"step": 2, "epoch": 1.0, "loss": 2.0, "exact_match": 10.0, "seconds": 1.0},
                {"step": 4, "epoch": 2.0, "loss": 1.8, "exact_match": 20.0, "seconds": 1.0},
            ]
        },
    }
    manifest = {
        "model_name": "default",
        "git": {"commit": "abc123", "dirty": False},
        "data": {"dataset_sha256": "d" * 64, "source": {"type": "hub", "repo_id": "me/data", "commit": "c0ffee"}},
    }
    run = RunDir(
        Path(
            make_run(
                tmp_path / "runs",
                "2026-11-25_08-15-12",
                adapter_dir=tiny_adapter_dir,
                metrics=metrics,
                manifest=manifest,
                config={"tracking": "mlflow", "lr": 0.001},
            )
        )
    )
    # An older loraops (or a hand edit) left a secret-looking key unredacted: it must not reach MLflow.
    run.config_path.write_text(run.config_path.read_text() + f"hub_token: {CANARY}\n")
    server_side = {
        "run_id": "f" * 32,
        "experiment_id": "1",
        "tracking_uri": "sqlite:////home/ana/loraops/mlruns/mlflow.db",
        "complete": True,
    }
    run.tracking_path.write_text(json.dumps(server_side))
    import_pulled(run)

    mlflow = client()
    [tracked] = training_runs(mlflow)
    link = json.loads(run.tracking_path.read_text())
    assert link["run_id"] == tracked.info.run_id and link["complete"] and link["imported_from"]["run_id"] == "f" * 32
    assert (
        tracked.data.tags["loraops.imported_from"] == "f" * 32 and tracked.data.tags["data.source.commit"] == "c0ffee"
    )
    assert tracked.data.tags["git.commit"] == "abc123" and tracked.data.params["lr"] == "0.001"
    assert tracked.data.params["hub_token"] == "<redacted>"
    assert [m.value for m in mlflow.get_metric_history(tracked.info.run_id, "val/exact_match")] == [10.0, 20.0]
    assert {"model/adapter_model.safetensors", "metrics.json"} <= artifact_paths(mlflow, tracked.info.run_id)

    # The next pull brings the server's tracking.json back, with eval scores added there: same MLflow run.
    run.tracking_path.write_text(json.dumps(server_side))
    run.write_metrics(RunMetrics.model_validate({**metrics, "eval": {"test": {"exact_match": 42.0, "n": 6}}}))
    import_pulled(run)
    [again] = training_runs(mlflow)
    assert again.info.run_id == tracked.info.run_id and again.data.metrics["eval/test/exact_match"] == 42.0
    assert len(mlflow.get_metric_history(tracked.info.run_id, "train/loss")) == 4  # nothing logged twice
    assert CANARY.encode() not in (project / "mlruns" / "mlflow.db").read_bytes()

    untracked = RunDir(Path(make_run(tmp_path / "runs", "r-tb", config={"tracking": "tensorboard"})))
    import_pulled(untracked)
    assert not untracked.tracking_path.exists() and len(training_runs(mlflow)) == 1


def test_config_checks_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="tracking='wandb' must be one of tensorboard, mlflow, both"):
        load_config(TrainConfig, CONFIGS, "train", ["tracking=wandb"])
    assert load_config(CompareConfig, CONFIGS, "compare", ["tracking=both"]).tracking == "both"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"tracking='mlflow' needs MLflow.*pip install 'loraops\[mlflow\]'"):
        load_config(EvalConfig, CONFIGS, "eval", ["tracking=mlflow"])
    assert load_config(EvalConfig, CONFIGS, "eval", []).tracking == "tensorboard"  # the default needs nothing


def test_params_are_flat_redacted_json() -> None:
    params = flatten_params(
        {
            "lr": 0.005,
            "columns": {"prompt": "q"},
            "data_source": {"type": "hub", "api_key": CANARY},
            "targets": ["q_proj", "v_proj"],
            "resume_from": None,
            "hf_token": CANARY,
            "dedup": True,
        }
    )
    assert params == {
        "lr": "0.005",
        "columns.prompt": "q",
        "data_source.type": "hub",
        "data_source.api_key": "<redacted>",
        "targets": '["q_proj", "v_proj"]',
        "resume_from": "null",
        "hf_token": "<redacted>",
        "dedup": "true",
    }


def test_tracking_uris() -> None:
    assert public_url("https://ana:pw@mlflow.example.org/path") == "https://mlflow.example.org/path"
    assert public_url("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"
    assert forwardable_uri("https://mlflow.example.org") == "https://mlflow.example.org"
    for local_only in (
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "sqlite:///mlruns/mlflow.db",
        "https://ana:pw@mlflow.example.org",
        None,
    ):
        assert forwardable_uri(local_only) is None, local_only


def test_remote_jobs_get_a_tracking_server_uri(tmp_path: Path) -> None:
    from loraops import remote

    server = {"REMOTE_HOST": "gpu", "MLFLOW_TRACKING_URI": "http://mlflow.lan:5000"}
    assert ("MLFLOW_TRACKING_URI", "http://mlflow.lan:5000") in remote.load_settings(tmp_path, None, server).forward_env
    local = {"REMOTE_HOST": "gpu", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert "MLFLOW_TRACKING_URI" not in dict(remote.load_settings(tmp_path, None, local).forward_env)
    assert "/mlruns/" in remote.PUSH_EXCLUDES  # the server's own store is never overwritten by a push


def test_publishing_to_the_hub_records_its_url_on_the_version(
    project: Path,
    hub: Any,
    tmp_path: Path,
    tiny_adapter_dir: Path,
    tiny_model_dir: Path,
) -> None:
    from loraops.publish import publish_hub

    run = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))
    evaluated(tmp_path, run, 80.0, 0.0, model_name=str(tiny_model_dir))
    result = publish_hub(str(run), repo_id=REPO, compare_cfg=compare_cfg(tmp_path, tracking="mlflow"))
    version = client().get_model_version_by_alias(f"loraops-{tiny_model_dir.name}", "champion")
    assert version.tags["hub_url"] == result.url == f"{hub.url}/{REPO}"
    assert version.tags["loraops.destination"] == f"hf:{REPO}" and version.tags["loraops.verdict"] == "IMPROVED"
    for path in (project / "mlruns").rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_merged_publish_registers_the_merged_model(
    project: Path, tmp_path: Path, tiny_adapter_dir: Path, tiny_model_dir: Path
) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))
    evaluated(tmp_path, run, 80.0, 0.0, model_name=str(tiny_model_dir))
    cfg = compare_cfg(tmp_path, tracking="both", registered_model="tabula")
    publish_local(str(run), merged=True, compare_cfg=cfg)
    mlflow = client()
    version = mlflow.get_model_version_by_alias("tabula", "champion")
    assert version.source == f"runs:/{version.run_id}/published/model" and version.tags["loraops.merged"] == "true"
    assert {
        "published/model/MLmodel",
        "published/model/model/model.safetensors",  # the merged weights, whole: no base model to reference
        "published/model/model/config.json",
        "published/README.md",
        "model/adapter_model.safetensors",
    } <= artifact_paths(mlflow, version.run_id)


def test_publish_follows_the_runs_own_tracking_and_says_when_it_does_not(
    project: Path,
    tmp_path: Path,
    tiny_adapter_dir: Path,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`train tracking=mlflow` then a plain `publish`: compare.yaml says tensorboard, the run says mlflow;
    the registry gets the version. With tracking=tensorboard given, it does not, and the log says so."""
    import shutil

    from loraops.cli import main

    run = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))
    RunDir(run).write_config({**RunDir(run).read_config(), "tracking": "mlflow"})
    evaluated(tmp_path, run, 80.0, 0.0, model_name=str(tiny_model_dir))
    overrides = [f"metrics_dir={tmp_path / 'm'}", "verify_samples=0", f"artifacts_dir={tmp_path / 'artifacts'}"]
    args = ["publish", str(run), *overrides]
    assert main([*args, "registered_model=tabula"]) == 0, capsys.readouterr().err
    assert str(client().get_model_version_by_alias("tabula", "champion").version) == "1"

    shutil.rmtree(tmp_path / "artifacts" / "models")
    caplog.clear()
    assert main([*args, "registered_model=other", "tracking=tensorboard"]) == 0
    assert "was tracked in MLflow, but this publish is not (tracking=tensorboard)" in caplog.text
    assert [m.name for m in client().search_registered_models()] == ["tabula"]

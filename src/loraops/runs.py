"""The run folder: its layout, its records, finding one, and the `latest` link.

This module alone spells the names of the files in a run folder; every other module asks a RunDir.

    outputs/runs/<timestamp>/
      model/              the adapter and tokenizer (PeftModel.from_pretrained loads it)
      config_used.yaml    the resolved config, secrets redacted
      manifest.json       status, data lineage, git commit, environment, library versions
      metrics.json        training metrics, and eval scores once `loraops eval` ran
      logs/               TensorBoard event files
      tracking.json       the run's MLflow run: id, experiment, tracking URI (tracking=mlflow or both)
      checkpoints/        for resume_from; removed once the run finished
      train.log           the run's log
      remote.log          the remote job's whole log, for runs trained over SSH
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loraops.atomic import ensure_folder, overwrite_in_place, write_text_atomic
from loraops.config.schema import RECORDED_CONTEXT, TrainConfig
from loraops.errors import LoraopsError
from loraops.paths import LATEST, RUNS_DIR
from loraops.records import FINISHED, Manifest, RunMetrics, Scores
from loraops.secrets import redact, scrubbed, secret_values

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-\d+")
# A process that starts a run writes the run folder's path to the file this variable names;
# the remote job wrapper sets it, so `remote pull` reads a file rather than a log line.
RUN_FILE_ENV = "LORAOPS_RUN_FILE"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def config_path(self) -> Path:
        return self.path / "config_used.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def tracking_path(self) -> Path:
        """Which MLflow run holds this run's tracking (written by loraops.tracking)."""
        return self.path / "tracking.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def initial_adapter_dir(self) -> Path:
        """PiSSA/OLoRA's starting adapter, kept until the run is saved (a checkpoint-like, removed with them)."""
        return self.checkpoints_dir / "initial-adapter"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def remote_log(self) -> Path:
        return self.path / "remote.log"

    def records(self) -> list[Path]:
        """The record files that exist (config, metrics, manifest): what a published copy carries."""
        return [p for p in (self.config_path, self.metrics_path, self.manifest_path) if p.is_file()]

    # --- creating and finding -------------------------------------------------------------------

    @classmethod
    def create(cls, output_dir: str | Path, now: datetime | None = None) -> RunDir:
        """Make <output_dir>/YYYY-MM-DD_HH-MM-SS; runs started in the same second get a suffix."""
        root = Path(output_dir)
        check_runs_dir(root)
        stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
        for n in range(1, 1000):
            candidate = root / (stamp if n == 1 else f"{stamp}_{n}")
            try:
                candidate.mkdir()  # atomic: exactly one concurrent caller wins each name
                return cls(candidate)
            except FileExistsError:
                continue
            except OSError as exc:
                raise LoraopsError(
                    f"output_dir={output_dir}: cannot create a run folder there ({exc.strerror})"
                ) from None
        raise LoraopsError(f"could not create a run folder under {root}")

    @classmethod
    def is_trained_run(cls, path: Path) -> bool:
        """A run folder with its config and adapter: something eval, compare and publish can use."""
        run = cls(path)
        return run.config_path.is_file() and run.model_dir.is_dir()

    # --- records --------------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        import yaml

        if not self.config_path.is_file():
            raise LoraopsError(f"{self.path}: not a run folder (its config_used.yaml is missing)")
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LoraopsError(f"{self.config_path}: cannot read the run's config ({exc})") from None
        if not isinstance(data, dict):
            raise LoraopsError(f"{self.config_path}: the run's config is not a mapping")
        return data

    def train_config(self) -> TrainConfig:
        """The run's config as today's schema reads it; keys it no longer knows are left out."""
        known = {k: v for k, v in self.read_config().items() if k in TrainConfig.model_fields}
        try:
            return TrainConfig.model_validate(known, context=RECORDED_CONTEXT)
        except (ValidationError, LoraopsError) as exc:
            raise LoraopsError(
                f"{self.config_path}: the run's config no longer reads as a train config ({exc})"
            ) from None

    def base_model(self) -> str:
        """The run's model_name, as the user wrote it (`default`, a folder, a hub id)."""
        model_name = self.read_config().get("model_name")
        if not model_name:
            raise LoraopsError(f"{self.config_path}: no model_name; pass model_name=... to name the base model")
        return str(model_name)

    def read_manifest(self) -> Manifest:
        """The manifest; an empty one (no status) for a folder without one."""
        return Manifest.read(self.manifest_path) if self.manifest_path.is_file() else Manifest()

    def read_metrics(self) -> RunMetrics:
        return RunMetrics.read(self.metrics_path) if self.metrics_path.is_file() else RunMetrics()

    def status(self) -> str | None:
        """running, finished, failed or interrupted; None for a folder without a manifest."""
        return self.read_manifest().status

    def is_finished(self) -> bool:
        return self.status() == FINISHED

    def write_config(self, config: dict[str, Any]) -> None:
        """Snapshot the resolved config: the values of secret-looking keys redacted, and any secret value of the
        environment (a `${oc.env:HF_TOKEN}` interpolated into a prompt) replaced wherever it stands."""
        from omegaconf import OmegaConf

        clean = scrubbed(redact(config), secret_values(os.environ).values())
        write_text_atomic(self.config_path, OmegaConf.to_yaml(clean), "the run's config")

    def write_manifest(self, manifest: Manifest) -> None:
        manifest.write(self.manifest_path, "the run's manifest")

    def record_stop(self, manifest: Manifest) -> None:
        """The manifest of a run that stopped (failed, interrupted). On a full disk no new file can be made,
        and a manifest left saying `running` would lie: the old one is then overwritten in the blocks it holds,
        compact and with the error cut to fit."""
        try:
            self.write_manifest(manifest)
            return
        except LoraopsError:
            pass
        try:
            overwrite_in_place(self.manifest_path, _fitted(manifest, self.manifest_path.stat().st_size))
        except OSError as exc:
            log.error("%s: cannot record that the run %s (%s)", self.manifest_path, manifest.status, exc.strerror)

    def write_metrics(self, metrics: RunMetrics) -> None:
        metrics.write(self.metrics_path, "the run's metrics")

    def record_eval(self, scores: dict[str, Scores]) -> int:
        """Add eval scores to the run's metrics; returns the training step they belong to."""
        metrics = self.read_metrics()
        metrics.eval = scores
        self.write_metrics(metrics)
        return metrics.global_steps or 0

    # --- checkpoints and links ------------------------------------------------------------------

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint; one cut short (kill -9 while saving) is skipped, and said so."""
        if not self.checkpoints_dir.is_dir():
            return None
        found = [p for p in self.checkpoints_dir.iterdir() if p.is_dir() and _CHECKPOINT.fullmatch(p.name)]
        for checkpoint in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return str(checkpoint)
            log.warning("skipping %s: %s; falling back to the one before", checkpoint.name, problem)
        return None

    def remove_checkpoints(self) -> None:
        shutil.rmtree(self.checkpoints_dir, ignore_errors=True)

    def mark_latest(self) -> Path:
        """Point <runs folder>/latest at this run, atomically (a rename over the old link)."""
        root = self.path.parent
        link = root / LATEST
        tmp = root / f".{LATEST}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.name)  # relative, so the outputs folder can be moved
        try:
            os.replace(tmp, link)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LoraopsError(f"{link}: cannot point it at {self.name} ({exc.strerror})") from None
        return link

    def announce(self) -> None:
        """Tell a waiting remote job where this run is (see RUN_FILE_ENV); relative to the cwd when inside it."""
        target = os.environ.get(RUN_FILE_ENV)
        if not target:
            return
        try:
            where = str(self.path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            where = str(self.path.resolve())
        write_text_atomic(Path(target), where + "\n")


def _fitted(manifest: Manifest, size: int) -> str:
    """The manifest as compact JSON of at most `size` bytes, its error message cut as much as that takes."""
    error = manifest.error or ""
    text = manifest.model_dump_json()
    while len(text.encode()) > size and error:
        error = error[: max(0, len(error) - (len(text.encode()) - size))]
        text = manifest.model_copy(update={"error": error}).model_dump_json()
    return text


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from, or None when every file in it is whole."""
    import json
    import zipfile

    from safetensors import SafetensorError, safe_open

    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{state.name} is missing or broken ({type(exc).__name__})"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin") and zipfile.ZipFile(path).testzip() is not None:
                return f"{path.name} is damaged"
        except (OSError, SafetensorError, zipfile.BadZipFile, ValueError) as exc:
            return f"{path.name} is incomplete ({type(exc).__name__})"
    return None


def check_runs_dir(output_dir: str | Path) -> None:
    """Fail now, before hours of training, if runs cannot be created in `output_dir` or `latest` cannot move."""
    root = Path(output_dir)
    ensure_folder(root, f"output_dir={output_dir}")
    if not os.access(root, os.W_OK | os.X_OK):
        raise LoraopsError(f"output_dir={output_dir} is not writable")
    latest = root / LATEST
    if latest.exists() and not latest.is_symlink():
        raise LoraopsError(
            f"{latest} is a real {'folder' if latest.is_dir() else 'file'}, not the link loraops "
            "keeps to the newest run; move it away"
        )


def find_run(spec: str | Path, runs_dir: str | Path = RUNS_DIR) -> tuple[RunDir | None, Path | None]:
    """(run, adapter folder) for a run folder, a `latest` link, a run name or an adapter folder.

    An adapter folder outside any run gives (None, adapter); a path that does not exist gives (None, None).
    """
    path = Path(spec).expanduser()
    if not path.exists() and len(path.parts) == 1:
        path = Path(runs_dir) / path  # a bare run name, or `latest`
    if RunDir.is_trained_run(path):
        run = RunDir(path.resolve())
        return run, run.model_dir
    if (path / "adapter_config.json").is_file():
        adapter = path.resolve()
        return (RunDir(adapter.parent) if RunDir.is_trained_run(adapter.parent) else None), adapter
    if path.exists():
        raise LoraopsError(f"{spec}: neither a run folder (config_used.yaml + model/) nor an adapter folder")
    return None, None

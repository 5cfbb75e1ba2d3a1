"""The MLflow Model Registry: publish adds a version and moves alias `champion` to it; compare asks for the champion.

A version's source is an artifact of the run's MLflow run: the published model saved as an MLflow Model
(published/model/, which `mlflow.pyfunc.load_model` and `mlflow models serve` load). Its description is
the model card; its tags carry the verdict, where it was published, and the run folder behind it.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from loraops.paths import portable_path
from loraops.records import Comparison, Reference, RegistryVersion
from loraops.runs import RunDir
from loraops.secrets import public_url
from loraops.tracking.link import open_run
from loraops.tracking.records import RUN_DIR_TAG, RUN_TAG
from loraops.tracking.settings import Settings
from loraops.tracking.store import Tracker, clean, missing_as_none

log = logging.getLogger(__name__)

CHAMPION = "champion"
DESTINATION_TAG, PUBLISHED_AT_TAG, HUB_URL_TAG = "loraops.destination", "loraops.published_at", "hub_url"
MODEL_ARTIFACT = "published/model"
_DESCRIPTION_LIMIT = 5000  # the registry's description column (MLflow's SQL schema)


@dataclass(frozen=True)
class Publication:
    """What publish hands the registry: the staged folder (its README.md is the card) and how it got there."""

    folder: Path
    merged: bool
    comparison: Comparison | None
    forced: bool
    destination: str  # "local:<path>" or "hf:<repo>", as the reference record holds it
    url: str | None = None  # the Hub repository's page


def model_name(configured: str | None, base_label: str) -> str:
    """The registered model: `registered_model`, else loraops-<base model name> (one champion per base model);
    `base_label` is the base model's public name (never a private path)."""
    if configured:
        return configured
    name = Path(base_label).stem if base_label.endswith(".gguf") else Path(base_label).name
    return "loraops-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def register(
    run: RunDir, publication: Publication, settings: Settings, name: str, write_model: Callable[[Path], None]
) -> RegistryVersion | None:
    """Register the published model as a new version of `name` and point `champion` at it; None when tracking
    is off or MLflow failed (said once; the publish itself stands). `write_model(folder)` saves the published
    model as an MLflow Model, which the version's source is."""
    tracker = open_run(run, settings)
    if not tracker.logging:
        return None
    card = (publication.folder / "README.md").read_text(encoding="utf-8")
    tracker.log_text(card, "published/README.md")
    _log_model(tracker, write_model)
    version = tracker.call(
        f"registering a version of {name}",
        _new_version,
        tracker,
        name,
        MODEL_ARTIFACT,
        _version_tags(run, publication),
        clean(card, tracker.uri)[:_DESCRIPTION_LIMIT],
    )
    if version is None:
        return None
    tracker.call(f"moving {name}@{CHAMPION}", tracker.client.set_registered_model_alias, name, CHAMPION, version)
    if not tracker.active:
        return None
    log.info(
        "registered %s version %s in MLflow (%s); alias %s points at it",
        name,
        version,
        public_url(tracker.uri),
        CHAMPION,
    )
    return RegistryVersion(model=name, version=version, alias=CHAMPION)


def _log_model(tracker: Tracker, write_model: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="loraops-mlflow-model-") as tmp:
        folder = Path(tmp) / "model"
        tracker.call("saving the published model as an MLflow Model", write_model, folder)
        tracker.log_folder(folder, MODEL_ARTIFACT)


def _new_version(tracker: Tracker, name: str, source: str, tags: dict[str, str], description: str) -> str:
    if missing_as_none(tracker.client.get_registered_model, name) is None:
        tracker.client.create_registered_model(name, description="LoRA adapters published by loraops")
    created = tracker.client.create_model_version(
        name, f"runs:/{tracker.run_id}/{source}", tracker.run_id, tags=tags, description=description
    )
    return str(created.version)


def _version_tags(run: RunDir, publication: Publication) -> dict[str, str]:
    comparison = publication.comparison
    tags = {
        RUN_TAG: run.name,
        RUN_DIR_TAG: portable_path(run.path),
        DESTINATION_TAG: publication.destination,
        PUBLISHED_AT_TAG: datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loraops.verdict": comparison.verdict if comparison else "not compared",
        "loraops.compared_with": comparison.reference if comparison else "",
        "loraops.forced": str(publication.forced).lower(),
        "loraops.merged": str(publication.merged).lower(),
        **({HUB_URL_TAG: publication.url} if publication.url else {}),
    }
    return {k: v for k, v in tags.items() if v}


def champion(settings: Settings, name: str) -> Reference | None:
    """The version `champion` points at, as a reference record (run, run_dir, destination, published_at,
    registry); None when there is none, or when the registry cannot be asked (said once, as a warning)."""
    if not settings.mlflow:
        return None
    tracker = Tracker.connect()
    return tracker.call(f"finding {name}@{CHAMPION}", _champion, tracker, name)


def _champion(tracker: Tracker, name: str) -> Reference | None:
    model = missing_as_none(tracker.client.get_registered_model, name)
    version = (model.aliases or {}).get(CHAMPION) if model is not None else None
    if version is None:
        return None
    found = tracker.client.get_model_version(name, str(version))
    tags = dict(found.tags or {})
    if RUN_TAG not in tags and found.run_id:  # a version registered by hand: its run names the run folder
        tags = {**dict(tracker.client.get_run(found.run_id).data.tags), **tags}
    if RUN_TAG not in tags:
        log.warning("%s@%s (version %s) names no loraops run; it cannot be compared against", name, CHAMPION, version)
        return None
    return Reference(
        run=tags[RUN_TAG],
        run_dir=tags.get(RUN_DIR_TAG),
        destination=tags.get(DESTINATION_TAG),
        published_at=tags.get(PUBLISHED_AT_TAG),
        registry=RegistryVersion(model=name, version=str(version), alias=CHAMPION),
    )

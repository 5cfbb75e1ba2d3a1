"""Staging a publish: resolve the run, write its model card, and fill a folder with what gets published.

The local copy (local.py) and the Hub upload (hub.py) both publish a folder staged here.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraops.atomic import read_json, write_json, write_text_atomic
from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.export.carry import carry, gguf_export
from loraops.loading import make_tokenizer_portable
from loraops.models import public_info
from loraops.publish.card import CardInputs, render_card
from loraops.publish.gate import GateResult, check_gate
from loraops.publish.record import follow_run_tracking, warn_if_untracked
from loraops.publish.verify import verify_published
from loraops.records import Comparison, ExportRecord, Reference
from loraops.runs import RunDir, find_run
from loraops.secrets import scrub, secret_values
from loraops.tracking.registry import Publication

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    run: str
    run_dir: Path
    destination: str  # "local:<path>" or "hf:<repo_id>", as the reference record holds it
    merged: bool
    forced: bool
    comparison: Comparison | None
    files: list[str]  # what was published, relative to the published folder / repository root
    path: Path | None = None  # the published folder (local)
    url: str | None = None  # the repository (Hub)
    reference: Reference | None = None  # the reference record this publish wrote
    forced_reason: str | None = None  # what --force overrode

    @classmethod
    def of(
        cls, run: RunDir, gate: GateResult, publication: Publication, files: list[str], reference: Reference
    ) -> PublishResult:
        """The result of a publish that went through: what the gate said, where it went, what was sent."""
        log.info(
            "published %s to %s%s",
            run.name,
            publication.url or publication.folder,
            " (forced past the gate)" if gate.forced else "",
        )
        return cls(
            run.name,
            run.path,
            publication.destination,
            publication.merged,
            gate.forced,
            gate.comparison,
            files,
            path=None if publication.url else publication.folder,
            url=publication.url,
            reference=reference,
            forced_reason=gate.reason if gate.forced else None,
        )


def resolve_run(model_path: str) -> RunDir:
    """The finished run to publish; publishing needs the run's records, not just an adapter."""
    run, _ = find_run(model_path)
    if run is None:
        raise LoraopsError(f"{model_path}: no run folder there; train one first (`make train`)")
    status = run.status()
    if status is not None and not run.is_finished():
        raise LoraopsError(f"run {run.name} is {status!r}, not finished; publish a finished run")
    return run


def admit(
    model_path: str,
    compare_cfg: CompareConfig | None,
    force: bool,
    named_run: bool,
    follow_tracking: bool,
    gguf: bool,
) -> tuple[RunDir, CompareConfig, GateResult, tuple[Path, ExportRecord] | None]:
    """What both publishes check before any work: the run, the settings it is published with, the gate's
    verdict, and the GGUF export to carry (`follow_tracking`: the command gave no tracking=...)."""
    cfg = compare_cfg or CompareConfig()
    run = resolve_run(model_path)
    if follow_tracking:
        cfg = follow_run_tracking(run, cfg)
    warn_if_untracked(run, cfg)
    gate = check_gate(run, cfg, force=force, named=named_run)
    return run, cfg, gate, gguf_export(cfg.exports_dir, run.name, force) if gguf else None


def build_card(
    run: RunDir,
    *,
    merged: bool,
    gate: GateResult,
    load_from: str,
    verification: str | None,
    gguf: ExportRecord | None = None,
    local: bool = False,
) -> str:
    config = run.read_config()
    base = public_info(run.base_model())
    inputs = CardInputs(
        run=run.name,
        config=config,
        metrics=run.read_metrics(),
        manifest=run.read_manifest(),
        base_model=base.hub_id,
        base_label=base.label,
        license=base.license,
        merged=merged,
        comparison=gate.comparison,
        forced_reason=gate.reason if gate.forced else None,
        load_from=load_from,
        verification=verification,
        gguf=gguf,
        local=local,
    )
    return render_card(inputs)


def stage(
    run: RunDir,
    dest: Path,
    *,
    merged: bool,
    gate: GateResult,
    compare_cfg: CompareConfig,
    load_from: str,
    records: bool,
    public: bool,
    gguf: tuple[Path, ExportRecord] | None = None,
) -> list[str]:
    """Fill the empty folder `dest` with the model, prove it is the evaluated one, then add its card and
    (if `records`) the run's records. Returns the staged files, relative to `dest`.

    `public` rewrites the adapter's base_model_name_or_path, which holds a path on this machine,
    to the base model's hub id (or bare name), so nothing private leaves with the upload.
    """
    dest.mkdir(parents=True)
    if merged:
        from loraops.publish.merge import merge_into

        merge_into(run, dest)
    else:
        # PEFT's generic README.md is replaced by our card; subfolders (none today) are not model files.
        for src in sorted(p for p in run.model_dir.iterdir() if p.is_file() and p.name != "README.md"):
            shutil.copyfile(src, dest / src.name)  # umask permissions: artifacts are shared
        if public:
            _publish_adapter_config(dest / "adapter_config.json", run)
    make_tokenizer_portable(dest)
    verification = verify_published(dest, run, merged, compare_cfg) if gate.comparison is not None else None
    if gguf is not None:
        carry(*gguf, dest)
    # A run recorded by an older loraops may hold a secret the user interpolated into a value: scrubbed here too.
    secrets = secret_values(os.environ).values()
    card = build_card(
        run,
        merged=merged,
        gate=gate,
        load_from=load_from,
        verification=verification,
        gguf=gguf[1] if gguf else None,
        local=not public,
    )
    write_text_atomic(dest / "README.md", scrub(card, secrets), "the model card")
    for record in run.records() if records else ():
        write_text_atomic(dest / record.name, scrub(record.read_text(encoding="utf-8"), secrets), "a run record")
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _publish_adapter_config(path: Path, run: RunDir) -> None:
    config = read_json(path)
    base = public_info(run.base_model())
    config["base_model_name_or_path"] = base.hub_id or base.label
    write_json(path, config)

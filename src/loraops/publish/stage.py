"""Staging a publish: resolve the run, write its model card, and fill a folder with what gets published.

The local copy (local.py) and the Hub upload (hub.py) both publish a folder staged here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraops.atomic import read_json, write_json, write_text_atomic
from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.compare import Comparison
from loraops.models import DEFAULT_MODEL
from loraops.publish.card import DEFAULT_BASE_ID, DEFAULT_LICENSE, CardInputs, front_matter, render_card
from loraops.publish.gate import GateResult
from loraops.publish.verify import verify_published
from loraops.runs import RunDir, find_run


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
    reference: dict[str, Any] = field(default_factory=dict)


def resolve_run(model_path: str) -> RunDir:
    """The finished run to publish; publishing needs the run's records, not just an adapter."""
    run, _ = find_run(model_path)
    if run is None:
        raise LoraopsError(f"{model_path}: no run folder there; train one first (`make train`)")
    status = run.status()
    if status is not None and not run.is_finished():
        raise LoraopsError(f"run {run.name} is {status!r}, not finished; publish a finished run")
    return run


def base_model_info(model_name: str) -> tuple[str | None, str, str | None]:
    """(hub id or None, name for the card's text, license or None) of the run's base model."""
    if model_name == DEFAULT_MODEL:
        return DEFAULT_BASE_ID, DEFAULT_BASE_ID, DEFAULT_LICENSE
    path = Path(model_name).expanduser()
    if path.exists():  # a private folder or GGUF file: only its name is published, never its path
        readme = path / "README.md" if path.is_dir() else None
        meta = front_matter(readme.read_text(encoding="utf-8")) if readme and readme.is_file() else {}
        return None, path.stem if path.is_file() else path.name, _license(meta)
    return model_name, model_name, _license(front_matter(_cached_hub_readme(model_name)))


def _license(meta: dict[str, Any]) -> str | None:
    value = meta.get("license")
    return value if isinstance(value, str) else None


def _cached_hub_readme(repo_id: str) -> str:
    """The base model's README from the local HF cache, if it is there; never a download."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "README.md")
    except Exception:  # an odd id or cache layout just means "license unknown"
        return ""
    return Path(cached).read_text(encoding="utf-8") if isinstance(cached, str) else ""


def build_card(run: RunDir, *, merged: bool, gate: GateResult, load_from: str, verification: str | None) -> str:
    config = run.read_config()
    hub_id, label, license_ = base_model_info(run.base_model())
    inputs = CardInputs(
        run=run.name,
        config=config,
        metrics=run.read_metrics(),
        manifest=run.read_manifest(),
        base_model=hub_id,
        base_label=label,
        license=license_,
        merged=merged,
        comparison=gate.comparison,
        forced_reason=gate.reason if gate.forced else None,
        load_from=load_from,
        verification=verification,
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
    verification = verify_published(dest, run, merged, compare_cfg) if gate.comparison is not None else None
    card = build_card(run, merged=merged, gate=gate, load_from=load_from, verification=verification)
    write_text_atomic(dest / "README.md", card)
    for record in run.records() if records else ():
        shutil.copyfile(record, dest / record.name)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _publish_adapter_config(path: Path, run: RunDir) -> None:
    config = read_json(path)
    hub_id, label, _ = base_model_info(run.base_model())
    config["base_model_name_or_path"] = hub_id or label
    write_json(path, config)

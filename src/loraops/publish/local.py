"""`loraops publish`: a run's model, card and records, copied to artifacts/models/<run>/ atomically.

The staging helpers here are shared with the Hub publish, which uploads a folder staged the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loraops import runs
from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.compare import Comparison
from loraops.eval.targets import find_run
from loraops.models import DEFAULT_MODEL
from loraops.publish.card import DEFAULT_BASE_ID, DEFAULT_LICENSE, CardInputs, front_matter, render_card
from loraops.publish.gate import GateResult, check_gate, portable_path, record_reference

log = logging.getLogger(__name__)

RECORDS = ("config_used.yaml", "metrics.json", "manifest.json")
_STAGING_KINDS = ("tmp", "old")


@dataclass
class PublishResult:
    run: str
    run_dir: Path
    destination: str  # "local:<path>" or "hf:<repo_id>", as recorded in artifacts/reference.json
    merged: bool
    forced: bool
    comparison: Comparison | None
    files: list[str]  # what was published, relative to the published folder / repository root
    path: Path | None = None  # the published folder (local)
    url: str | None = None  # the repository (Hub)
    reference: dict[str, Any] = field(default_factory=dict)


def resolve_run(model_path: str) -> tuple[Path, Path]:
    """(run folder, adapter folder); publishing needs the run's records, not just an adapter."""
    run_dir, adapter_dir = find_run(model_path)
    if run_dir is None or adapter_dir is None:
        raise LoraopsError(f"{model_path}: no run folder there (config_used.yaml + model/); "
                           "train one first (`make train`)")  # fmt: skip
    status = _read_optional(run_dir / "manifest.json").get("status")
    if status not in (None, "finished"):
        raise LoraopsError(f"run {run_dir.name} is {status!r}, not finished; publish a finished run")
    return run_dir, adapter_dir


def _read_optional(path: Path) -> dict[str, Any]:
    return runs.read_json(path) if path.is_file() else {}


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


def build_card(run_dir: Path, *, merged: bool, gate: GateResult, load_from: str) -> str:
    config = yaml.safe_load((run_dir / "config_used.yaml").read_text(encoding="utf-8")) or {}
    hub_id, label, license_ = base_model_info(str(config.get("model_name", DEFAULT_MODEL)))
    inputs = CardInputs(
        run=run_dir.name, config=config, metrics=_read_optional(run_dir / "metrics.json"),
        manifest=_read_optional(run_dir / "manifest.json"), base_model=hub_id, base_label=label,
        license=license_, merged=merged, comparison=gate.comparison,
        forced_reason=gate.reason if gate.forced else None, load_from=load_from,
    )  # fmt: skip
    return render_card(inputs)


def stage(run_dir: Path, adapter_dir: Path, dest: Path, *, merged: bool, card: str, records: bool,
          public: bool) -> list[str]:  # fmt: skip
    """Fill the empty folder `dest` with the model, its card and (if `records`) the run's records.

    `public` rewrites the adapter's base_model_name_or_path, which holds a path on this machine,
    to the base model's hub id (or bare name), so nothing private leaves with the upload.
    """
    dest.mkdir(parents=True)
    if merged:
        from loraops.publish.merge import merge_into

        merge_into(run_dir, adapter_dir, dest)
    else:
        # PEFT's generic README.md is replaced by our card; subfolders (none today) are not model files.
        for src in sorted(p for p in adapter_dir.iterdir() if p.is_file() and p.name != "README.md"):
            shutil.copyfile(src, dest / src.name)  # umask permissions: artifacts are shared
        if public:
            _publish_adapter_config(dest / "adapter_config.json", run_dir)
    runs.write_text_atomic(dest / "README.md", card)
    for name in RECORDS if records else ():
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _publish_adapter_config(path: Path, run_dir: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    model_name = str(yaml.safe_load((run_dir / "config_used.yaml").read_text(encoding="utf-8"))["model_name"])
    hub_id, label, _ = base_model_info(model_name)
    config["base_model_name_or_path"] = hub_id or label
    runs.write_json(path, config)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _recover_leftovers(dest: Path) -> None:
    """Undo what an interrupted publish of the same run (a dead process) left next to `dest`."""
    for kind in _STAGING_KINDS:
        for path in dest.parent.glob(f".{dest.name}.{kind}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not dest.exists():
                os.replace(path, dest)  # it died between the two renames: the old copy is still whole
            else:
                shutil.rmtree(path, ignore_errors=True)


def _swap_in(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the complete `tmp`; the old copy is deleted only once the new one is in place."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)  # rename cannot replace a non-empty folder, so move the old one aside first
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old.exists():
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def publish_local(model_path: str = "outputs/runs/latest", *, merged: bool = False, force: bool = False,
                  artifacts_dir: str | Path = "artifacts",
                  compare_cfg: CompareConfig | None = None) -> PublishResult:  # fmt: skip
    """Copy a run's model, card and records to <artifacts_dir>/models/<run>/ and make it the reference."""
    compare_cfg = compare_cfg or CompareConfig()
    run_dir, adapter_dir = resolve_run(model_path)
    gate = check_gate(run_dir, compare_cfg, force=force)
    dest = Path(artifacts_dir) / "models" / run_dir.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    _recover_leftovers(dest)
    card = build_card(run_dir, merged=merged, gate=gate, load_from=portable_path(dest))
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = stage(run_dir, adapter_dir, tmp, merged=merged, card=card, records=True, public=False)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-copied folder behind
        raise
    destination = f"local:{portable_path(dest)}"
    reference = record_reference(run_dir, destination, compare_cfg.reference_file)
    log.info("published %s to %s%s", run_dir.name, dest, " (forced past the gate)" if gate.forced else "")
    return PublishResult(run_dir.name, run_dir, destination, merged, gate.forced, gate.comparison, files,
                         path=dest, reference=reference)  # fmt: skip

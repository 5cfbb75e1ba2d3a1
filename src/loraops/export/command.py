"""`loraops export RUN --format gguf|vllm`: the run in the form llama.cpp, Ollama or vLLM runs, proven by generation.

Everything is written into a staging folder beside the destination and swapped in whole, only when the
exported files reproduced the evaluated answers well enough (or with --force); a destination that is not an
earlier export is never replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraops.atomic import recover_folder_leftovers, swap_in_folder, write_text_atomic
from loraops.config import CompareConfig
from loraops.errors import ConfigError
from loraops.eval.records import MetricsRecords
from loraops.export import card, gguf, ollama, vllm
from loraops.export.agreement import Agreement, measure
from loraops.export.llamacpp import ENGINE_PACKAGE, engine_version
from loraops.loading import load_tokenizer
from loraops.models import resolve_model_path
from loraops.paths import portable_path
from loraops.publish.stage import resolve_run
from loraops.records import ExportRecord, Prediction
from loraops.runs import RunDir

log = logging.getLogger(__name__)

FORMATS = ("gguf", "vllm")
RECORD = "export.json"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    record: ExportRecord
    placed: bool  # False: below the agreement threshold, nothing was written


@dataclass(frozen=True)
class Request:
    format: str
    merged: bool = False
    quantize: str | None = None
    limit: int | None = None
    out: str | None = None
    force: bool = False


def export(model_path: str, request: Request, compare_cfg: CompareConfig | None = None) -> ExportResult:
    cfg = compare_cfg or CompareConfig()
    run = resolve_run(model_path)
    dest = Path(request.out) if request.out else cfg.exports_dir / run.name / request.format
    _check_destination(dest)
    if request.format == "gguf":
        engine_version()
        gguf.check_request(run, request.merged, request.quantize)
        rows, max_new_tokens = _evaluated(run, cfg, request.limit)
    elif request.merged or request.quantize:
        raise ConfigError("--merged and --quantize apply to --format gguf; vLLM serves the adapter on its base")
    created = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_folder_leftovers(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if request.format == "gguf":
            record = _export_gguf(run, tmp, request, cfg, rows, max_new_tokens, portable_path(dest))
        else:
            record = _export_vllm(run, tmp, portable_path(dest))
        if not (record.good or request.force):
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in created:  # innermost first: only what this export made
                folder.rmdir()
            return ExportResult(dest, record, placed=False)
        record = record.model_copy(update={"forced": not record.good})
        _write_records(tmp, record)
        swap_in_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (run.path / "exports").mkdir(exist_ok=True)
    write_text_atomic(run.path / "exports" / f"{request.format}.json", record.model_dump_json(indent=2) + "\n")
    log.info("exported %s to %s", run.name, dest)
    return ExportResult(dest, record, placed=True)


def _check_destination(dest: Path) -> None:
    if dest.exists() and not (dest / RECORD).is_file():
        raise ConfigError(f"{dest} exists and is not an export loraops wrote: not replacing it (pass --out)")


def _evaluated(run: RunDir, cfg: CompareConfig, limit: int | None) -> tuple[list[Prediction], int]:
    """The evaluated answers the exported files must reproduce, and the token budget they were generated with."""
    records = MetricsRecords.of(cfg.metrics_folder, run.name)
    record = records.split_record(cfg.primary_split)
    if record is None:
        raise ConfigError(
            f"run {run.name} has no evaluated {cfg.primary_split} split in {cfg.metrics_folder}: run `loraops eval` "
            "first; export proves its files by regenerating the evaluated answers"
        )
    if record.settings.get("do_sample"):
        raise ConfigError("the evaluation sampled its answers, so no export can reproduce them: evaluate greedily")
    rows = records.predictions(cfg.primary_split)[:limit]
    return rows, int(record.settings.get("max_new_tokens", 64))


def _export_gguf(
    run: RunDir,
    folder: Path,
    request: Request,
    cfg: CompareConfig,
    rows: list[Prediction],
    max_new_tokens: int,
    shown: str,
) -> ExportRecord:
    files = gguf.build(run, folder, request.merged, request.quantize)
    tokenizer = load_tokenizer(str(run.model_dir))
    roles = {"base": files.base, "lora": files.lora, "merged": files.merged, "quantized": files.quantized}
    names = {role: path.name for role, path in roles.items() if path is not None}
    notes = []
    translation = ollama.translate(tokenizer)
    if translation.family is None:
        notes.append(
            "the chat template matches none of Ollama's templates: the Modelfile has no TEMPLATE, so "
            "Ollama takes the GGUF's own chat template"
        )
    system = run.train_config().system_prompt
    # The adapter on its base, as Ollama's ADAPTER and llama.cpp's --lora run it; the merged model beside it.
    modelfiles: dict[str, tuple[str, Path, Path | None]] = {}
    if files.lora is not None:
        modelfiles["modelfile"] = ("Modelfile", files.base, files.lora)
    merged = files.quantized or files.merged
    if merged is not None:
        modelfiles["modelfile_merged"] = ("Modelfile.merged" if files.lora else "Modelfile", merged, None)
    for role, (name, model, adapter) in modelfiles.items():
        (folder / name).write_text(ollama.modelfile(model, adapter, translation, system, run.name, name))
        names[role] = name
    if files.lora is None:
        notes.append(f"no GGUF LoRA: {gguf.lora_obstacle(run)}; the merged model holds it")
    agreements = _prove(files, rows, tokenizer, max_new_tokens)
    exact_enough = all(a.exact >= cfg.export_min_agreement for a in agreements if not a.quantized)
    record = ExportRecord(
        run=run.name,
        format="gguf",
        files=names,
        sha256={name: _sha256(folder / name) for name in names.values()},
        engine={"name": ENGINE_PACKAGE, "version": engine_version()},
        split=cfg.primary_split,
        agreement=[dataclasses.asdict(a) for a in agreements],
        min_agreement=cfg.export_min_agreement,
        good=exact_enough,
        notes=notes + _quantisation_notes(agreements),
    )
    return record.model_copy(update={"commands": card.commands(record, shown, "")})


def _prove(files: gguf.GgufFiles, rows: list[Prediction], tokenizer: object, max_new_tokens: int) -> list[Agreement]:
    runs: list[tuple[str, Path, Path | None, bool]] = []
    if files.lora is not None:
        runs.append(("base + LoRA", files.base, files.lora, False))
    if files.merged is not None:
        runs.append(("merged F16", files.merged, None, False))
    if files.quantized is not None:
        runs.append((f"merged {files.quantized.stem.rsplit('-', 1)[-1]}", files.quantized, None, True))
    results = []
    for artifact, model, lora, quantized in runs:
        log.info("generating %d evaluated prompts with llama.cpp: %s", len(rows), artifact)
        results.append(measure(artifact, [model], rows, tokenizer, max_new_tokens, lora, quantized))
        log.info("%s", results[-1].summary())
    return results


def _quantisation_notes(agreements: list[Agreement]) -> list[str]:
    full = next((a for a in agreements if a.artifact == "merged F16"), None)
    quantized = [a for a in agreements if a.quantized]
    if full is None or not quantized:
        return []
    q = quantized[0]
    return [
        f"quantising to {q.artifact.split()[-1]} took identical answers from {full.exact:.1%} (F16) to "
        f"{q.exact:.1%}, {100 * (full.exact - q.exact):.1f} points; token agreement {q.tokens:.1%}"
    ]


def _export_vllm(run: RunDir, folder: Path, shown: str) -> ExportRecord:
    base = resolve_model_path(run.base_model())
    config = Path(base) / "config.json"
    architectures = json.loads(config.read_text()).get("architectures", []) if config.is_file() else []
    facts = vllm.build(run, folder, architectures)
    notes = ["vLLM was not run here (it needs a GPU): the folder was checked against what vLLM's LoRA loader accepts"]
    if facts["targets_unchecked"]:
        notes.append(f"target modules not checked: vLLM's LoRA modules for {architectures} are not known here")
    names = {"adapter": "adapter"}
    digests = {f"adapter/{p.name}": _sha256(p) for p in sorted((folder / "adapter").iterdir())}
    record = ExportRecord(
        run=run.name,
        format="vllm",
        files=names,
        sha256=digests,
        engine={"name": "vllm", "version": None},
        good=True,
        notes=notes,
    )
    shown_base = portable_path(Path(base)) if Path(base).is_dir() else base
    return record.model_copy(update={"commands": card.commands(record, shown, shown_base, facts["max_lora_rank"])})


def _write_records(folder: Path, record: ExportRecord) -> None:
    (folder / RECORD).write_text(record.model_dump_json(indent=2) + "\n")
    (folder / "README.md").write_text(card.render(record))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""`loraops export RUN --format gguf|vllm`: the run in the form llama.cpp, Ollama or vLLM runs, proven by generation.

Everything is written into a staging folder beside the destination and swapped in whole, only when the
exported files reproduced the evaluated answers well enough (or with --force); a destination that is not an
earlier export is never replaced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from loraops.atomic import recover_folder_leftovers, swap_in_folder, write_text_atomic
from loraops.config import CompareConfig
from loraops.data.datafiles import sha256_file
from loraops.errors import ConfigError
from loraops.eval.generate import stop_token_ids
from loraops.export import card, gguf, ollama, vllm
from loraops.export.agreement import Agreement, compare, generate_llamacpp
from loraops.export.answers import GENERATED, Answers, reference_answers
from loraops.export.llamacpp import ENGINE_PACKAGE, engine_version
from loraops.loading import load_tokenizer
from loraops.models import resolve_model_path
from loraops.paths import portable_path
from loraops.publish.stage import resolve_run
from loraops.records import ExportRecord
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
    splits: tuple[str, ...] = ()  # eval splits the proof answers (default: compare.yaml's primary_split)
    config_dir: Path = Path("configs")  # where eval.yaml is, for splits never evaluated


def export(model_path: str, request: Request, compare_cfg: CompareConfig | None = None) -> ExportResult:
    cfg = compare_cfg or CompareConfig()
    run = resolve_run(model_path)
    dest = Path(request.out) if request.out else cfg.exports_dir / run.name / request.format
    _check_destination(dest)
    if request.format == "gguf":
        engine_version()
        gguf.check_request(run, request.merged, request.quantize)
        splits = list(request.splits or [cfg.primary_split])
        answers = reference_answers(run, cfg, splits, request.limit, request.config_dir)
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
            record = _export_gguf(run, tmp, request, cfg, answers, portable_path(dest))
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


def _export_gguf(
    run: RunDir,
    folder: Path,
    request: Request,
    cfg: CompareConfig,
    answers: list[Answers],
    shown: str,
) -> ExportRecord:
    files = gguf.build(run, folder, request.merged, request.quantize)
    tokenizer = load_tokenizer(str(run.model_dir))
    roles = {"base": files.base, "lora": files.lora, "merged": files.merged, "quantized": files.quantized}
    names = {role: path.name for role, path in roles.items() if path is not None}
    notes = _write_modelfiles(run, folder, files, tokenizer, names)
    if files.lora is None:
        notes.append(f"no GGUF LoRA: {gguf.lora_obstacle(run)}; the merged model holds it")
    agreements = _prove(files, answers, tokenizer, _stop_tokens(run, tokenizer))
    notes += [
        f"{a.split}: answers generated by the PEFT model at export (never evaluated)"
        for a in answers
        if a.source == GENERATED
    ]
    exact_enough = all(a.exact >= cfg.export_min_agreement for a in agreements if not a.quantized)
    record = ExportRecord(
        run=run.name,
        format="gguf",
        files=names,
        sha256={name: sha256_file(folder / name) for name in names.values()},
        engine={"name": ENGINE_PACKAGE, "version": engine_version()},
        splits=[a.split for a in answers],
        agreement=[dataclasses.asdict(a) for a in agreements],
        min_agreement=cfg.export_min_agreement,
        good=exact_enough,
        notes=notes + _quantisation_notes(agreements),
    )
    return record.model_copy(update={"commands": card.commands(record, shown, "")})


def _write_modelfiles(
    run: RunDir, folder: Path, files: gguf.GgufFiles, tokenizer: Any, names: dict[str, str]
) -> list[str]:
    """Ollama's Modelfiles: the adapter on its base (Ollama's ADAPTER, llama.cpp's --lora), and the merged model."""
    translation = ollama.translate(tokenizer)
    modelfiles: dict[str, tuple[str, Path, Path | None]] = {}
    if files.lora is not None:
        modelfiles["modelfile"] = ("Modelfile", files.base, files.lora)
    merged = files.quantized or files.merged
    if merged is not None:
        modelfiles["modelfile_merged"] = ("Modelfile.merged" if files.lora else "Modelfile", merged, None)
    system = run.train_config().system_prompt
    for role, (name, model, adapter) in modelfiles.items():
        (folder / name).write_text(ollama.modelfile(model, adapter, translation, system, run.name, name))
        names[role] = name
    if translation.family is not None:
        return []
    return [
        "the chat template matches none of Ollama's templates: the Modelfile has no TEMPLATE, so Ollama takes "
        "the GGUF's own chat template"
    ]


def _prove(files: gguf.GgufFiles, answers: list[Answers], tokenizer: Any, stops: list[int]) -> list[Agreement]:
    """Each exported model, run by llama.cpp on every split's prompts, against the PEFT model's answers."""
    runs: list[tuple[str, Path, Path | None, bool]] = []
    if files.lora is not None:
        runs.append(("base + LoRA", files.base, files.lora, False))
    if files.merged is not None:
        runs.append(("merged F16", files.merged, None, False))
    if files.quantized is not None:
        runs.append((f"merged {files.quantized.stem.rsplit('-', 1)[-1]}", files.quantized, None, True))
    results = []
    for artifact, model, lora, quantized in runs:
        names = [model.name] + ([lora.name] if lora else [])
        prompts = [row.messages for split in answers for row in split.rows]
        log.info("generating %d prompts with llama.cpp: %s", len(prompts), artifact)
        budgets = [split.max_new_tokens for split in answers for _ in split.rows]
        made = generate_llamacpp(model, lora, tokenizer, prompts, budgets, stops)
        start = 0
        for split in answers:
            mine, start = made[start : start + len(split.rows)], start + len(split.rows)
            results.append(compare(artifact, names, split.split, split.rows, mine, tokenizer, quantized))
            log.info("%s", results[-1].summary())
    return results


def _stop_tokens(run: RunDir, tokenizer: Any) -> list[int]:
    """The tokens eval stops at: the tokenizer's end of sequence and the base model's generation config's."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(resolve_model_path(run.base_model()))
    except OSError:  # a base without generation_config.json
        config = None
    return stop_token_ids(SimpleNamespace(generation_config=config), tokenizer)


def _quantisation_notes(agreements: list[Agreement]) -> list[str]:
    """What quantising cost, per split: identical answers of the quantised file against the merged F16 one."""
    full = {a.split: a for a in agreements if a.artifact == "merged F16"}
    return [
        f"{q.split}: quantising to {q.artifact.split()[-1]} took identical answers from {full[q.split].exact:.1%} "
        f"(F16) to {q.exact:.1%}, {100 * (full[q.split].exact - q.exact):.1f} points; token agreement {q.tokens:.1%}"
        for q in agreements
        if q.quantized and q.split in full
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
    digests = {f"adapter/{p.name}": sha256_file(p) for p in sorted((folder / "adapter").iterdir())}
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

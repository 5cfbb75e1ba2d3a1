"""What `publish --format gguf` carries of a run's GGUF export, and the proof that it is what export tested.

Export ran each GGUF file with llama.cpp against the evaluated answers and recorded its sha256; the files
publish copies must have those digests, so the published GGUF files are the ones the proof ran. The base
model's GGUF is not carried (it is the base model's, not the run's), nor the Modelfile that points at it.
"""

from __future__ import annotations

from pathlib import Path

from loraops.atomic import link_or_copy, read_json
from loraops.data.datafiles import sha256_file
from loraops.errors import ConfigError, LoraopsError
from loraops.records import ExportRecord

CARRIED_ROLES = ("lora", "merged", "quantized", "modelfile_merged")


def gguf_export(exports_dir: Path, run: str, force: bool) -> tuple[Path, ExportRecord]:
    """The run's GGUF export folder and record; refused if missing, or kept with --force unless publish is forced."""
    folder = exports_dir / run / "gguf"
    if not (folder / "export.json").is_file():
        raise ConfigError(f"run {run} has no GGUF export in {exports_dir}: run `loraops export {run}` first")
    record = ExportRecord.model_validate(read_json(folder / "export.json"))
    if not record.good and not force:
        raise ConfigError(
            f"the GGUF export of {run} answered below its agreement threshold (kept with --force): "
            "export again, or publish --force"
        )
    return folder, record


def carry(folder: Path, record: ExportRecord, dest: Path) -> list[str]:
    """Copy the run's GGUF files into `dest`, each checked against the digest export recorded."""
    names = [record.files[role] for role in CARRIED_ROLES if role in record.files]
    for name in names:
        source = folder / name
        if not source.is_file() or sha256_file(source) != record.sha256.get(name):
            raise LoraopsError(
                f"{source} is not the file export tested (missing, or its sha256 differs from export.json): "
                "run `loraops export` again"
            )
        link_or_copy(source, dest / name)
    return names

"""The GGUF files of a run, written by llama.cpp's converters: the LoRA, its base, and optionally the merged model.

The base is the very GGUF file training's base was converted from where there is one (the embedded default
model, a `.gguf` model_name): llama.cpp then runs the weights training saw. Any other base is converted to
F16. `--merged` folds the adapter into the base (publish's merge) and converts that, then quantises it with
llama.cpp's own quantiser when asked.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraops.atomic import link_or_copy
from loraops.errors import ConfigError
from loraops.export.llamacpp import quant_types, quantize, run_converter
from loraops.models import resolve_model_path, source_gguf
from loraops.publish.merge import merge_into
from loraops.runs import RunDir


@dataclass(frozen=True)
class GgufFiles:
    base: Path
    lora: Path | None  # None where the adapter has parts a GGUF LoRA cannot hold (DoRA, modules_to_save)
    merged: Path | None = None
    quantized: Path | None = None


def lora_obstacle(run: RunDir) -> str | None:
    """Why llama.cpp's LoRA format cannot carry this adapter, or None."""
    cfg = run.train_config()
    if cfg.use_dora:
        return "a DoRA adapter (use_dora=true): llama.cpp's LoRA format has no magnitude vectors"
    if cfg.lora_modules_to_save:
        return f"an adapter that trains {', '.join(cfg.lora_modules_to_save)} in full (lora_modules_to_save)"
    return None


def check_request(run: RunDir, merged: bool, quantize_to: str | None) -> None:
    """Refuse, before any conversion, what cannot be exported as asked."""
    obstacle = lora_obstacle(run)
    if obstacle and not merged:
        raise ConfigError(f"GGUF export: {obstacle}; export it with --merged (the merged model holds everything)")
    if quantize_to and not merged:
        raise ConfigError("--quantize applies to the merged model: add --merged")
    if quantize_to and quantize_to not in quant_types():
        raise ConfigError(f"--quantize {quantize_to}: this llama.cpp offers {', '.join(quant_types())}")


def build(run: RunDir, folder: Path, merged: bool, quantize_to: str | None) -> GgufFiles:
    """Write the GGUF files into `folder` (a staging folder: the caller swaps it into place)."""
    base_name = run.base_model()
    base_dir = resolve_model_path(base_name)
    lora = None
    if lora_obstacle(run) is None:
        lora = folder / f"{run.name}-LoRA-F16.gguf"
        convert = ["--base", base_dir, "--outfile", str(lora), "--outtype", "f16", str(run.model_dir)]
        run_converter("convert_lora_to_gguf.py", convert, f"the adapter {run.model_dir}")
    base = _base_gguf(base_name, base_dir, folder)
    if not merged:
        return GgufFiles(base, lora)
    merged_file = folder / f"{run.name}-F16.gguf"
    with tempfile.TemporaryDirectory(prefix="loraops-merged-", dir=folder.parent) as tmp:
        merge_into(run, Path(tmp))
        run_converter(
            "convert_hf_to_gguf.py", [tmp, "--outfile", str(merged_file), "--outtype", "f16"], "the merged model"
        )
    quantized = None
    if quantize_to:
        quantized = folder / f"{run.name}-{quantize_to.upper()}.gguf"
        quantize(merged_file, quantized, quantize_to)
    return GgufFiles(base, lora, merged_file, quantized)


def _base_gguf(base_name: str, base_dir: str, folder: Path) -> Path:
    original = source_gguf(base_name)
    if original is None:
        dest = folder / f"{Path(base_dir).name}-F16.gguf"
        run_converter("convert_hf_to_gguf.py", [base_dir, "--outfile", str(dest), "--outtype", "f16"], "the base model")
        return dest
    dest = folder / original.name
    link_or_copy(original, dest)
    return dest

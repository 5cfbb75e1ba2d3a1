"""`chat` and `serve` on the exported GGUF files, run by llama.cpp: try exactly what you will ship.

The model is llama.cpp's; everything around it is the one ChatModel: the run's tokenizer renders and
encodes the prompt as in training (llama.cpp receives token ids), replies stream through the same
streamer, stop strings, cancellation and context checks, so only the weights and their engine change.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from loraops.atomic import read_json
from loraops.errors import ConfigError
from loraops.export.llamacpp import engine_version, native_output_captured
from loraops.inference import ChatModel, Reply
from loraops.loading import load_tokenizer
from loraops.paths import ARTIFACTS_DIR, exports_dir
from loraops.records import ExportRecord
from loraops.runs import RunDir, find_run

ROLES = ("lora", "quantized", "merged")  # the default is the first the export has


class LlamaCppChatModel(ChatModel):
    """A ChatModel whose tokens come from llama.cpp (llama-cpp-python) instead of transformers."""

    def generate(self, reply: Reply, streamer: Any, cancel: threading.Event) -> None:
        import torch

        settings, llm = reply.settings, self.model
        streamer.put(torch.tensor([reply.prompt_ids]))  # the prompt: the streamer skips it
        if reply.seed is not None:
            llm.set_seed(reply.seed)
        sampling = {"temp": settings.temperature, "top_p": settings.top_p, "top_k": 0} if settings.do_sample else {}
        tokens = llm.generate(
            reply.prompt_ids, **({"temp": 0.0, "top_k": 1} | sampling), min_p=0.0, repeat_penalty=1.0, reset=True
        )
        generated = 0
        try:
            for token in tokens:
                streamer.put(torch.tensor([token]))
                generated += 1
                if token in self.stops or generated >= settings.max_new_tokens or cancel.is_set():
                    break
        finally:
            streamer.end()


def load(spec: str, role: str | None = None, artifacts_dir: str = ARTIFACTS_DIR) -> ChatModel:
    """The GGUF export of a run (run folder or name, or the export folder itself) as a ChatModel."""
    engine_version()
    folder, run = _export_folder(spec, artifacts_dir)
    record = ExportRecord.model_validate(read_json(folder / "export.json"))
    role = role or next(r for r in ROLES if r in record.files)
    if role not in record.files:
        raise ConfigError(
            f"{folder} has no {role} GGUF file; it has {', '.join(r for r in ROLES if r in record.files)}"
        )
    run = run or find_run(record.run)[0]
    if run is None:
        raise ConfigError(
            f"{folder} exports run {record.run}, which is not in the runs folder: its tokenizer is needed"
        )
    model_file = folder / record.files["base" if role == "lora" else role]
    lora = folder / record.files["lora"] if role == "lora" else None
    llm = _llama(model_file, lora)
    system = run.train_config().system_prompt or None
    model = LlamaCppChatModel(f"{record.run}-gguf-{role}", llm, load_tokenizer(str(run.model_dir)), system, llm.n_ctx())
    # llama.cpp's logits are not read back here, and its generate takes one sequence.
    model.supports_logprobs = model.supports_grammars = model.supports_batching = False
    return model


def _export_folder(spec: str, artifacts_dir: str) -> tuple[Path, RunDir | None]:
    if (Path(spec) / "export.json").is_file():
        return Path(spec), None
    run, _ = find_run(spec)
    folder = exports_dir(artifacts_dir) / (run.name if run else Path(spec).name) / "gguf"
    if not (folder / "export.json").is_file():
        raise ConfigError(f"no GGUF export of {spec} in {folder.parent.parent}: run `loraops export {spec}` first")
    return folder, run


def _llama(model: Path, lora: Path | None) -> Any:
    from llama_cpp import Llama

    with native_output_captured(model.name + (f" with {lora.name}" if lora else "")):
        return Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=0, verbose=False)


def load_model(spec: str, engine: str = "transformers", gguf: str | None = None) -> ChatModel:
    """What chat and serve run: the model with transformers, or its GGUF export with llama.cpp."""
    if engine == "llamacpp":
        return load(spec, gguf)
    if gguf is not None:
        raise ConfigError("--gguf picks a file of the GGUF export: it needs --engine llamacpp")
    return ChatModel.load(spec)

"""`loraops serve --engine vllm`: vLLM's own OpenAI server on one base model with each run as a LoRA module,
for a GPU machine where one process per model and request-at-a-time batching are not enough.

The runs are served from their vLLM exports (`loraops export RUN --format vllm`, checked against vLLM's LoRA
loader); every setting loraops serve has is passed on or refused, never dropped: the model ids (the base as its
name, each run as its own), the default reply length, the batch size, CORS origins, the API key (through the
environment, never the command line that `ps` shows) and the system prompt the runs trained with.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loraops.atomic import read_json, write_text_atomic
from loraops.data.tokenize import with_default_system
from loraops.errors import ConfigError
from loraops.export import vllm as vllm_export
from loraops.loading import load_tokenizer
from loraops.models import resolve_model_path
from loraops.paths import ARTIFACTS_DIR, exports_dir
from loraops.records import ExportRecord
from loraops.runs import RunDir, find_run

INSTALL = "pip install vllm (Linux with an NVIDIA GPU; see https://docs.vllm.ai)"
# Flags loraops sets from its own options or the runs: given again through --vllm-args they would conflict.
OWN_FLAGS = (
    "--api-key",
    "--enable-lora",
    "--lora-modules",
    "--max-lora-rank",
    "--max-loras",
    "--served-model-name",
    "--tokenizer",
    "--chat-template",
    "--host",
    "--port",
    "--max-num-seqs",
    "--allowed-origins",
    "--override-generation-config",
)


@dataclass(frozen=True)
class VllmOptions:
    """What `loraops serve` was asked, in vLLM's terms."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_new_tokens: int | None = None  # None: vLLM's default (what the context leaves); given: also a cap
    max_batch: int | None = None  # None: vLLM's own --max-num-seqs
    cors_origins: Sequence[str] = ()
    tensor_parallel: int | None = None
    extra: str = ""  # more vLLM flags, as typed on a command line


@dataclass(frozen=True)
class VllmServer:
    argv: list[str]
    chat_template: str | None  # the runs' system prompt as the template's default turn; written beside the export
    template_path: Path | None
    model_ids: list[str] = field(default_factory=list)


def check_engine() -> None:
    """vLLM installed and a GPU it can use, or exit 2 before anything is loaded."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"--engine vllm: vLLM is not installed here; {INSTALL}")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--engine vllm needs an NVIDIA GPU, and torch sees none here; serve without --engine")


def build(specs: Sequence[str], options: VllmOptions, artifacts_dir: str = ARTIFACTS_DIR) -> VllmServer:
    """The `vllm serve` command for these runs, checked: one base for all, exported, one system prompt."""
    runs = [_run(spec) for spec in specs]
    exports = [_export(run, artifacts_dir) for run in runs]
    bases = {run.base_model() for run in runs}
    if len(bases) > 1:
        raise ConfigError(f"vLLM serves one base model, and these runs have several: {', '.join(sorted(bases))}")
    base = bases.pop()
    if len({run.name for run in runs}) < len(runs) or base in {run.name for run in runs}:
        raise ConfigError("each served model needs its own id: the runs' names and their base's must differ")
    extra = _extra(options.extra)
    rank = max(vllm_export.adapter_rank(read_json(folder / "adapter_config.json")) for folder in exports)
    template = _chat_template(runs, exports[0])
    template_path = exports[0].parent / "chat_template.jinja" if template else None
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", resolve_model_path(base)]
    argv += ["--served-model-name", base, "--tokenizer", str(exports[0])]
    argv += ["--enable-lora", "--max-loras", str(len(runs)), "--max-lora-rank", str(vllm_export.max_lora_rank(rank))]
    argv += ["--lora-modules", *(f"{run.name}={folder}" for run, folder in zip(runs, exports))]
    argv += ["--host", options.host, "--port", str(options.port)]
    # vLLM allows every origin unless told; loraops serve allows none unless told.
    argv += ["--allowed-origins", json.dumps(list(options.cors_origins))]
    if options.max_new_tokens is not None:
        argv += ["--override-generation-config", json.dumps({"max_new_tokens": options.max_new_tokens})]
    if options.max_batch is not None:
        argv += ["--max-num-seqs", str(options.max_batch)]
    if options.tensor_parallel is not None:
        argv += ["--tensor-parallel-size", str(options.tensor_parallel)]
    if template_path is not None:
        argv += ["--chat-template", str(template_path)]
    return VllmServer(argv + extra, template, template_path, [base, *(run.name for run in runs)])


def run(server: VllmServer, api_key: str | None) -> None:
    """Become vLLM's server: its signals, logs and exit status are the user's from here on."""
    if server.template_path is not None and server.chat_template is not None:
        write_text_atomic(server.template_path, server.chat_template)
    env = dict(os.environ)
    if api_key:
        env["VLLM_API_KEY"] = api_key  # vLLM reads it as --api-key; an argument would show in `ps`
    print("starting:", shlex.join(server.argv[1:]), flush=True)
    sys.stdout.flush()
    os.execve(server.argv[0], server.argv, env)


def _run(spec: str) -> RunDir:
    run, _ = find_run(spec)
    if run is None:
        raise ConfigError(f"--engine vllm serves runs; {spec} is not one (a run folder, a run name or `latest`)")
    return run


def _export(run: RunDir, artifacts_dir: str) -> Path:
    """The run's exported adapter folder, made by `loraops export RUN --format vllm`."""
    folder = exports_dir(artifacts_dir) / run.name / "vllm"
    record_file = folder / "export.json"
    if not record_file.is_file():
        raise ConfigError(
            f"{run.name} has no vLLM export in {folder}: run `loraops export {run.name} --format vllm` first"
        )
    record = ExportRecord.model_validate(read_json(record_file))
    return folder / record.files["adapter"]


def _chat_template(runs: list[RunDir], adapter: Path) -> str | None:
    """The chat template with the runs' system prompt as its default system turn, as training rendered it; None
    when they trained without one. vLLM renders one template for every model it serves."""
    prompts = {run.train_config().system_prompt or "" for run in runs}
    if len(prompts) > 1:
        raise ConfigError(
            "these runs trained with different system prompts, and vLLM renders one chat template for all the "
            "models it serves: serve them separately"
        )
    system = prompts.pop()
    return with_default_system(load_tokenizer(str(adapter)).chat_template, system) if system else None


def _extra(text: str) -> list[str]:
    try:
        extra = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--vllm-args: {exc}") from None
    taken = [flag for flag in extra if flag.split("=")[0] in OWN_FLAGS]
    if taken:
        raise ConfigError(
            f"--vllm-args: {', '.join(taken)} is set by loraops serve from its own options; use those "
            "(the API key comes from LORAOPS_API_KEY)"
        )
    return extra

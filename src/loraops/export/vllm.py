"""A folder vLLM serves as is: the PEFT adapter, checked against what vLLM's LoRA loader accepts.

vLLM refuses (vllm/lora/peft_helper.py) DoRA, `modules_to_save`, a bias and a rank above `--max-lora-rank`,
whose values are a fixed list (vllm/config/lora.py); for Llama-family models it applies LoRA to the
attention and MLP projections, the embeddings and the LM head. Each is checked here, so a folder that vLLM
would refuse at start-up is refused at export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from loraops.errors import ConfigError
from loraops.loading import make_tokenizer_portable
from loraops.runs import RunDir

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Architectures whose LoRA modules are known here: Llama's layout (vllm/model_executor/models/llama.py).
LLAMA_LIKE = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
LLAMA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def max_lora_rank(rank: int) -> int:
    """The smallest value of vLLM's --max-lora-rank that admits `rank`."""
    for allowed in MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ConfigError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})")


def adapter_rank(adapter: dict[str, Any]) -> int:
    """The largest LoRA rank in an adapter_config.json, its `rank_pattern` included."""
    return max([int(adapter.get("r", 0)), *map(int, (adapter.get("rank_pattern") or {}).values())])


def check(adapter: dict[str, Any], architectures: list[str]) -> list[str]:
    """What vLLM would refuse in this adapter_config.json, as messages (empty: it loads)."""
    problems = []
    if adapter.get("use_dora"):
        problems.append("DoRA (use_dora=true): vLLM does not support it; export the merged model instead")
    if adapter.get("modules_to_save"):
        problems.append(f"modules_to_save={adapter['modules_to_save']}: vLLM accepts none for a causal LM")
    if adapter.get("bias", "none") != "none":
        problems.append(f"bias={adapter['bias']}: vLLM does not load adapter biases")
    if isinstance(adapter.get("init_lora_weights"), str):
        problems.append(f"init_lora_weights={adapter['init_lora_weights']}: vLLM refuses an unconverted adapter")
    targets = adapter.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if set(architectures) & LLAMA_LIKE:
        unknown = sorted(set(targets) - LLAMA_MODULES)
        if unknown:
            problems.append(f"target modules {unknown}: vLLM applies LoRA only to {sorted(LLAMA_MODULES)} here")
    if adapter_rank(adapter) > MAX_LORA_RANKS[-1]:
        problems.append(f"rank {adapter_rank(adapter)}: above vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})")
    return problems


def build(run: RunDir, folder: Path, base_architectures: list[str]) -> dict[str, Any]:
    """Copy the adapter into `folder/adapter` after checking it; the facts the card's command needs."""
    adapter = json.loads((run.model_dir / "adapter_config.json").read_text())
    problems = check(adapter, base_architectures)
    if problems:
        raise ConfigError("vLLM would refuse this adapter: " + "; ".join(problems))
    dest = folder / "adapter"
    dest.mkdir()
    for item in run.model_dir.iterdir():
        if item.is_file():
            shutil.copyfile(item, dest / item.name)
    make_tokenizer_portable(dest)  # vLLM releases pin transformers 4.x
    unchecked = not set(base_architectures) & LLAMA_LIKE
    return {"max_lora_rank": max_lora_rank(adapter_rank(adapter)), "targets_unchecked": unchecked}

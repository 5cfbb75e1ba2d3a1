"""Loading weights: tokenizers, causal LMs (4-bit too), PEFT adapters, and a model ready to generate.

Every load reads the Hugging Face cache that loraops.hf names, and a broken or missing file is the
user's to fix, said in one line, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraops import distributed, hf
from loraops.data.tokenize import ensure_chat_template
from loraops.environment import Environment, native_bf16
from loraops.errors import ConfigError, LoraopsError


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path, **hf.load_kwargs())
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot load the tokenizer of {model_path!r}: {exc}") from exc


# transformers 5 saves a generic fast tokenizer as `TokenizersBackend`, a class transformers 4.x lacks; both
# load `PreTrainedTokenizerFast` from the same tokenizer.json, to the same ids and chat template.
_V5_ONLY_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def make_tokenizer_portable(folder: Path) -> None:
    """Let a saved tokenizer load on transformers 4.x too (serving stacks pin it): its class named as both know it."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    portable = _V5_ONLY_TOKENIZER_CLASSES.get(config.get("tokenizer_class"))
    if portable:
        path.write_text(json.dumps({**config, "tokenizer_class": portable}, indent=2, ensure_ascii=False) + "\n")


def _require_cuda(setting: str, why: str, instead: str, module: str, install: str) -> None:
    """Say before anything heavy, not deep inside a load, that `setting` needs a GPU and a package."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{setting}: {why}, and this machine has none; {instead}")
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{setting} needs {install} (in .venv)")


def check_4bit_supported() -> None:
    _require_cuda(
        "load_in_4bit=true",
        "QLoRA needs a CUDA GPU for bitsandbytes' 4-bit kernels",
        "set load_in_4bit=false, or train on a GPU server (make ssh-train)",
        "bitsandbytes",
        "bitsandbytes: pip install bitsandbytes",
    )


def check_liger_supported() -> None:
    _require_cuda(
        "liger_kernel=true",
        "Liger's kernels are Triton kernels and run on CUDA GPUs only",
        "set liger_kernel=false (labelled_logits_only already spares the logits on CPU)",
        "liger_kernel",
        "Liger: pip install liger-kernel",
    )


def quantization_kwargs(load_in_4bit: bool, sharded: bool = False) -> dict[str, Any]:
    """from_pretrained arguments for a QLoRA base: NF4, double quantisation, bf16 compute (fp16 without bf16 in
    hardware). The 4-bit weights are stored in the compute dtype, so FSDP and ZeRO-3 can shard them with the
    rest (one dtype per flat parameter); sharded, they are placed by the sharding, not by a device_map."""
    if not load_in_4bit:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if native_bf16() else torch.float16
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )
    if sharded:
        return {"quantization_config": config}
    return {"quantization_config": config, "device_map": {"": distributed.local_rank()}}  # each process its GPU


def load_causal_lm(
    model_path: str,
    dtype: Any,
    load_in_4bit: bool = False,
    attn_implementation: str | None = None,
    sharded: bool = False,
) -> Any:
    """The model in `dtype`; `sharded`: trained under FSDP or ZeRO-3, which place the weights themselves."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, **hf.load_kwargs(), **quantization_kwargs(load_in_4bit, sharded), **attention
        )
    except SafetensorError as exc:  # a weights file cut short (an interrupted download or copy)
        raise LoraopsError(
            f"cannot load model {model_path!r}: a weights file is damaged or incomplete ({_first(exc)}); "
            "download or convert it again"
        ) from None
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot load model {model_path!r}: {exc}") from exc


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def load_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """`model` with the PEFT adapter in `adapter_dir` applied; a broken or mismatched adapter is a user error."""
    from peft import PeftModel
    from safetensors import SafetensorError

    config = Path(adapter_dir) / "adapter_config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"{config}: not a readable adapter config ({exc}); train the run again") from None
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise LoraopsError(
            f"{adapter_dir}: cannot load this adapter ({type(exc).__name__}: {first}); "
            "it may be truncated, or trained on another base model"
        ) from None


def load_for_inference(
    base_path: str, adapter_dir: Path | None, env: Environment, merge: bool, load_in_4bit: bool = False
) -> tuple[Any, Any]:
    """The resolved base model with an adapter applied (and merged, if asked; never into 4-bit weights), in eval
    mode on the device, and the tokenizer prompts are rendered with (the adapter's, which holds its template)."""
    tokenizer = load_tokenizer(str(adapter_dir or base_path))
    ensure_chat_template(tokenizer)  # a base without a template gets the same fallback training used
    model = load_causal_lm(base_path, env.torch_dtype, load_in_4bit)
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir)
        if merge and not load_in_4bit:
            model = model.merge_and_unload()
    if not load_in_4bit:  # 4-bit weights were placed on their GPU at load time
        model.to(env.device)
    return model.eval(), tokenizer

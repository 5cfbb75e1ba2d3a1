"""llama.cpp's own tools: its converters and its engine, never a home-made GGUF writer.

The engine is llama-cpp-python (`pip install 'loraops[gguf]'`, which builds llama.cpp). Its source package
vendors llama.cpp, converters included (`convert_lora_to_gguf.py`, `convert_hf_to_gguf.py`, `gguf-py`); they
are taken from the source package of the installed version, so converter and engine always agree, and kept
in the cache. `LLAMA_CPP_DIR` points at a llama.cpp checkout instead (offline machines).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

from loraops.errors import ConfigError, LoraopsError
from loraops.paths import cache_dir

log = logging.getLogger(__name__)

ENGINE_PACKAGE = "llama-cpp-python"
LLAMA_CPP_DIR_ENV = "LLAMA_CPP_DIR"
_CONVERTERS = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py")
# What the converters import beside themselves: the model classes and llama.cpp's own gguf package.
_CONVERTER_PARTS = (*_CONVERTERS, "conversion/", "gguf-py/")
_COMPLETE = ".loraops-complete"
_INSTALL_HINT = "pip install 'loraops[gguf]' (it builds llama.cpp: a few minutes)"


def engine_version() -> str:
    """The installed llama-cpp-python, or a ConfigError saying how to get it."""
    try:
        return importlib.metadata.version(ENGINE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"GGUF export needs llama.cpp's engine, which is not installed: {_INSTALL_HINT}") from None


def converters_dir() -> Path:
    """A folder holding llama.cpp's converters, of the same version as the engine."""
    configured = os.environ.get(LLAMA_CPP_DIR_ENV)
    if configured:
        folder = Path(configured)
        if not all((folder / name).is_file() for name in _CONVERTERS):
            raise ConfigError(f"{LLAMA_CPP_DIR_ENV}={configured} has no {' and '.join(_CONVERTERS)}")
        return folder
    version = engine_version()
    folder = cache_dir("llama.cpp") / version
    if not (folder / _COMPLETE).is_file():
        _extract_converters(version, folder)
    return folder


def _extract_converters(version: str, folder: Path) -> None:
    log.info("fetching llama.cpp's converters from the %s %s source package (once)", ENGINE_PACKAGE, version)
    with tempfile.TemporaryDirectory(prefix="loraops-llama-cpp-") as tmp:
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=:all:"]
        done = subprocess.run(
            [*download, "--dest", tmp, f"{ENGINE_PACKAGE}=={version}"], capture_output=True, text=True
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise LoraopsError(
                f"llama.cpp's converters come from the {ENGINE_PACKAGE} {version} source package, which could not "
                f"be downloaded ({done.stderr.strip()[-200:] or 'no archive'}); offline, set {LLAMA_CPP_DIR_ENV} "
                "to a llama.cpp checkout"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=_parent(folder)))
        try:
            _unpack(archives[0], staging)
            (staging / _COMPLETE).write_text(version)
            if folder.exists() and not (folder / _COMPLETE).is_file():
                shutil.rmtree(folder, ignore_errors=True)  # what an interrupted extraction left
            try:
                staging.rename(folder)
            except OSError:
                if not (folder / _COMPLETE).is_file():  # another process finished first: its copy is the same
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _unpack(archive: Path, dest: Path) -> None:
    """Only the converters' files, out of vendor/llama.cpp/, never a path outside `dest`."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/vendor/llama.cpp/", 1)
            if len(parts) != 2 or not parts[1].startswith(_CONVERTER_PARTS) or not member.isfile():
                continue
            target = dest / parts[1]
            if not target.resolve().is_relative_to(dest.resolve()):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is not None:
                target.write_bytes(source.read())


def run_converter(script: str, args: list[str], what: str) -> None:
    """Run one of llama.cpp's converters with this Python; its failure becomes a LoraopsError."""
    folder = converters_dir()
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter then takes its own gguf-py, the version it was written for
    done = subprocess.run([sys.executable, str(folder / script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise LoraopsError(f"llama.cpp's {script} could not convert {what}: {detail[-1] if detail else 'no output'}")


@contextmanager
def native_output_captured(what: str) -> Iterator[None]:
    """llama.cpp logs from C to file descriptor 2 whatever `verbose` says: kept aside, and its last lines
    shown only when loading or running fails."""
    # llama-cpp-python forwards llama.cpp's log to sys.stderr unless its logger is quiet; ggml writes to fd 2.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log_file, redirect_stderr(log_file):
        os.dup2(log_file.fileno(), 2)
        try:
            yield
        except (ValueError, RuntimeError) as exc:  # what llama-cpp-python raises for a file it cannot load
            log_file.flush()
            log_file.seek(0)
            tail = [line for line in log_file.read().splitlines() if line.strip()][-3:]
            raise LoraopsError(f"llama.cpp could not run {what}: {exc}; {' | '.join(tail)}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quantize(source: Path, dest: Path, kind: str) -> None:
    """Quantise a GGUF model with llama.cpp's own quantiser (through the engine's bindings)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}", None)
    if ftype is None:
        raise ConfigError(f"--quantize {kind}: this llama.cpp has no such type; try one of {', '.join(quant_types())}")
    params: Any = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    with native_output_captured(f"the quantiser on {source.name}"):
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), params)
    if code != 0 or not dest.is_file():
        raise LoraopsError(f"llama.cpp could not quantise {source.name} to {kind} (code {code})")


def quant_types() -> list[str]:
    """The quantisation types this llama.cpp build offers, lower case (q8_0, q4_k_m, ...)."""
    import llama_cpp

    prefix = "LLAMA_FTYPE_MOSTLY_"
    names = [name[len(prefix) :].lower() for name in dir(llama_cpp) if name.startswith(prefix)]
    return sorted(name for name in names if name.startswith(("q", "iq", "tq")) or name in ("f16", "bf16"))

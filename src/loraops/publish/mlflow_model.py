"""The registry's copy of a published model: an MLflow Model (the transformers flavour, chat task), so that
`mlflow.pyfunc.load_model("models:/<name>@champion")` and `mlflow models serve` answer as the evaluated model.

A published adapter is saved in MLflow's PEFT form: the adapter and the tokenizer, the base model named by its
local folder (MLflow's `base_model_path`; on another machine `mlflow.transformers.load_model(uri,
base_model_path=...)` names the base's copy there). A merged model is saved whole. The run's system prompt
becomes the chat template's default system turn, as training added it to conversations without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from loraops import environment
from loraops.data.tokenize import with_default_system
from loraops.eval.targets import resolve_model
from loraops.inference import trained_system_prompt
from loraops.loading import load_for_inference
from loraops.models import resolve_model_path
from loraops.runs import RunDir
from loraops.tracking.store import import_mlflow

log = logging.getLogger(__name__)

CHAT_TASK = "llm/v1/chat"  # MLflow's OpenAI-shaped chat signature: {"messages": [...], "max_tokens": ...}


def mlflow_model_writer(run: RunDir, folder: Path, merged: bool) -> Callable[[Path], None]:
    """A function that saves the published model as an MLflow Model at the path it is given: the run's adapter
    (the files publish verified it copied), or the merged model staged in `folder`."""

    def write(dest: Path) -> None:
        import torch

        mlflow = import_mlflow()
        target = resolve_model(str(run.path))
        base_path = str(folder) if merged else resolve_model_path(target.base_model)
        adapter = None if merged else target.adapter_dir
        env = environment.detect(torch.cuda.is_available())  # bf16 where the GPU has it, as chat and serve load
        model, tokenizer = load_for_inference(base_path, adapter, env, merge=False)
        system = trained_system_prompt(target)
        if system:
            tokenizer.chat_template = with_default_system(tokenizer.chat_template, system)
        # Its notes speak of a Hub reference that a local base is not; loraops says what it saved, below.
        logging.getLogger("mlflow.transformers").setLevel(logging.WARNING)
        mlflow.transformers.save_model(
            {"model": model, "tokenizer": tokenizer},
            str(dest),
            task=CHAT_TASK,
            model_config={"do_sample": False},  # greedy, as eval scored it (the pipeline samples by default)
            base_model_path=None if merged else base_path,
            pip_requirements=pinned_requirements(peft=not merged),
        )
        what = "the merged model" if merged else f"the adapter on base {base_path}"
        log.info("saved %s as an MLflow Model (transformers flavour, task %s)", what, CHAT_TASK)

    return write


def pinned_requirements(peft: bool) -> list[str]:
    """What loading the model needs, at the versions it was saved with (MLflow's own inference of them asks for
    torchvision, which a text model never uses); a CUDA or CPU build label is left to the serving machine."""
    packages = ["transformers", "torch", "accelerate", *(["peft"] if peft else [])]
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue  # accelerate is optional for loading
    return pinned

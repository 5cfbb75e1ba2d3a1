"""Several training processes: which one is main, how the run folder reaches all of them, and launching.

loraops runs unchanged under the standard launchers (`torchrun`, `accelerate launch`), which set
RANK, LOCAL_RANK and WORLD_SIZE; the Trainer does the data parallelism. `num_processes=N` starts
the launch itself: `torchrun` for plain DDP, `accelerate launch` with an accelerate config file
(shipped in the package: FSDP, DeepSpeed ZeRO 2 and 3).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

from loraops.errors import ConfigError
from loraops.paths import shipped_configs

log = logging.getLogger(__name__)
T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """The process that owns the run folder, its records, the adapter and `latest`."""
    return rank() == 0


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ


def init() -> None:
    """Join the process group now (gloo on CPU, NCCL on GPUs), so ranks can agree before the Trainer starts."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState()


def share(value: str | None) -> str:
    """The main process's `value`, on every process."""
    if world_size() == 1:
        return value or ""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def gathered(value: T) -> list[T]:
    """Every process's `value`, in rank order, on every process."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    found: list[T] = [value] * world_size()
    dist.all_gather_object(found, value)
    return found


def first_found(value: str | None) -> str | None:
    """The first process's non-None `value`, on every process: what one found, all act on, so none waits alone."""
    return next((v for v in gathered(value) if v is not None), None)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def current_sharding() -> str | None:
    """ "fsdp", "zero2" or "zero3" inside a process accelerate launched with such a config; None otherwise."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return f"zero{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '0')}"
    return None


def sharding_of(accelerate_config: str | None) -> str | None:
    """The same, read from the accelerate config a job is about to be launched with."""
    import json

    import yaml

    if not accelerate_config:
        return None
    path = accelerate_config_file(accelerate_config)
    try:
        config = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"accelerate_config={accelerate_config}: cannot read {path} ({exc})") from None
    kind = config.get("distributed_type") if isinstance(config, dict) else None
    if kind == "FSDP":
        return "fsdp"
    if kind == "DEEPSPEED":
        return f"zero{_zero_stage(config.get('deepspeed_config') or {})}"
    return None


def _zero_stage(settings: dict[str, object]) -> int:
    """The ZeRO stage of accelerate's deepspeed_config, or of the DeepSpeed JSON file it names."""
    import json

    if "zero_stage" in settings:
        return int(str(settings["zero_stage"]))
    file = settings.get("deepspeed_config_file")
    try:
        stage = json.loads(Path(str(file)).read_text(encoding="utf-8"))["zero_optimization"]["stage"] if file else 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"deepspeed_config_file={file}: cannot read its zero_optimization.stage ({exc})") from None
    return int(stage)


def accelerate_config_file(name: str) -> Path:
    """A file path, or the name of a config shipped in the package (ddp, fsdp, deepspeed_zero2, deepspeed_zero3)."""
    shipped = shipped_configs() / "accelerate"
    path = Path(name)
    if path.suffix not in (".yaml", ".yml", ".json"):
        path = shipped / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise ConfigError(f"accelerate_config={name}: no such file (shipped: {names})")
    return path


def launch_command(num_processes: int, accelerate_config: str | None, argv: list[str]) -> list[str]:
    """The standard launcher running `loraops ARGV` in num_processes processes on this machine: torchrun, or
    `accelerate launch` with a config; through loraops.launcher, which reports a failed process by its status."""
    if accelerate_config:
        config = str(accelerate_config_file(accelerate_config))
        launcher = ["accelerate", "--config_file", config, "--num_processes", str(num_processes)]
    else:
        launcher = ["torchrun", "--standalone", "--nproc_per_node", str(num_processes)]
    return [sys.executable, "-m", "loraops.launcher", *launcher, "-m", "loraops", *argv]


def relaunch(num_processes: int, accelerate_config: str | None, argv: list[str]) -> int:
    """Run this command again under a launcher, and wait; Ctrl-C and SIGTERM reach every process."""
    command = launch_command(num_processes, accelerate_config, argv)
    log.info("launching %d processes: %s", num_processes, shlex.join(command[3:]))
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise

"""Several training processes: which one is main, how the run folder reaches all of them, and launching.

loraops runs unchanged under the standard launchers (`torchrun`, `accelerate launch`), which set
RANK, LOCAL_RANK and WORLD_SIZE; the Trainer does the data parallelism. `num_processes=N` starts
the launch itself: `torchrun` for plain DDP, `accelerate launch` with an accelerate config file
(shipped in the package: FSDP, DeepSpeed ZeRO 2 and 3).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from loraops.errors import ConfigError
from loraops.paths import shipped_configs

log = logging.getLogger(__name__)


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


def first_found(value: str | None) -> str | None:
    """The first process's non-None `value`, on every process: what one found, all act on, so none waits alone."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    found: list[str | None] = [None] * world_size()
    dist.all_gather_object(found, value)
    return next((v for v in found if v is not None), None)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


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
    """The standard launcher running `loraops ARGV` in num_processes processes on this machine."""
    if accelerate_config:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(accelerate_config_file(accelerate_config)),
            "--num_processes",
            str(num_processes),
            "-m",
            "loraops",
            *argv,
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(num_processes),
        "-m",
        "loraops",
        *argv,
    ]


def relaunch(num_processes: int, accelerate_config: str | None, argv: list[str]) -> int:
    """Run this command again under a launcher, and wait; Ctrl-C and SIGTERM reach every process."""
    command = launch_command(num_processes, accelerate_config, argv)
    log.info("launching %d processes: %s", num_processes, " ".join(command[1:4] + command[-len(argv) - 2 :]))
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise

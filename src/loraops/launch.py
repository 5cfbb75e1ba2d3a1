"""How a training job uses this machine: how many processes, on which GPUs, sharded how, and what cannot
work there, refused before anything loads (exit 2) rather than after an epoch.

With several GPUs visible, `make train` trains on all of them, one process each through the standard
launcher, as LLaMA-Factory does; never through `nn.DataParallel`, which the Trainer falls back to when one
process sees several GPUs (it splits each batch across replicas behind loraops' back). `num_processes=1`
with several GPUs therefore trains on the first one only, and says so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass

from loraops import distributed, environment
from loraops.config import TrainConfig
from loraops.errors import ConfigError
from loraops.loading import check_4bit_supported, check_liger_supported

log = logging.getLogger(__name__)

# Initialisations that change the base weights and are converted to a plain LoRA on save (from full weights).
MUTATING_INITS = ("pissa", "olora")
_FLASH_MODULES = {
    "flash_attention_2": ("flash_attn", "flash-attn"),
    "flash_attention_3": ("flash_attn_interface", "flash-attn 3 (hopper/)"),
}


@dataclass(frozen=True)
class Launch:
    processes: int
    sharding: str | None  # "fsdp", "zero2", "zero3"; None: each process holds the whole model (DDP, or one)
    gpus: int  # the GPUs this job may use; 0: it trains on the CPU

    def relaunches(self, accelerate_config: str | None) -> bool:
        """Whether `loraops train` starts a launcher, rather than being one of its processes or alone."""
        return not distributed.under_launcher() and (self.processes > 1 or accelerate_config is not None)


def plan(cfg: TrainConfig) -> Launch:
    """The job's processes, GPUs and sharding, with `cuda_visible_devices` applied (before anything starts CUDA:
    a process group, a device count) and everything impossible refused."""
    environment.apply_cuda_visible_devices(cfg.cuda_visible_devices)
    gpus = environment.gpu_count(cfg.device)
    if distributed.under_launcher():
        processes, sharding = distributed.world_size(), distributed.current_sharding()
    else:
        processes = cfg.num_processes or max(1, gpus)
        sharding = distributed.sharding_of(cfg.accelerate_config)
        if gpus and processes > gpus:
            raise ConfigError(
                f"num_processes={processes}, but {gpus} GPU{'s are' if gpus > 1 else ' is'} visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); one process per GPU"
            )
        if processes == 1 and gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = environment.first_visible_gpu()
            log.info(
                "num_processes=1: training on GPU %s only; num_processes=null (the default) trains on all %d",
                environment.first_visible_gpu(),
                gpus,
            )
            gpus = 1
    launch = Launch(processes, sharding, gpus)
    check(cfg, launch)
    return launch


def check(cfg: TrainConfig, launch: Launch) -> None:
    """Refuse, up front, the combinations that cannot run on this machine."""
    if cfg.accelerate_config and not launch.gpus:
        raise ConfigError(
            f"accelerate_config={cfg.accelerate_config}: accelerate's configs place processes on GPUs, and this "
            "job has none; on the CPU, num_processes=N alone runs N processes (DDP over gloo)"
        )
    if launch.sharding and launch.sharding.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"accelerate_config={cfg.accelerate_config} needs DeepSpeed: pip install deepspeed")
    if launch.sharding in ("fsdp", "zero3") and cfg.lora_init.startswith(MUTATING_INITS):
        raise ConfigError(
            f"lora_init={cfg.lora_init} with {launch.sharding}: PiSSA and OLoRA are converted to a plain LoRA from "
            "the full weights on one process, which sharded training never holds; use lora_init=default, or DDP"
        )
    if launch.sharding in ("fsdp", "zero3") and cfg.generation_metrics and cfg.eval_strategy != "no":
        raise ConfigError(
            f"val_metrics={cfg.generation_metrics} generates answers at each validation, and under "
            f"{launch.sharding} no process holds the whole model to generate with; set val_metrics=[] (validation "
            "by loss, select_metric=loss) and score with `loraops eval` after training, or train with DDP or ZeRO-2"
        )
    if cfg.load_in_4bit:
        check_4bit_supported()
    if cfg.liger_kernel:
        check_liger_supported()
    check_attention(cfg.attn_implementation, launch.gpus)


def check_attention(name: str, gpus: int) -> None:
    if name in ("sdpa", "eager"):
        return
    if not gpus:
        raise ConfigError(f"attn_implementation={name} runs on CUDA GPUs only; use sdpa on the CPU")
    module, package = _FLASH_MODULES.get(name, ("kernels", "kernels (pip install kernels)"))
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"attn_implementation={name} needs {package}, which is not installed; or use sdpa")

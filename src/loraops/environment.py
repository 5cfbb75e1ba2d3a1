"""Device and precision: what the hardware can do, decided once before loading a model."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Environment:
    device: str  # "cuda" or "cpu"
    device_name: str
    precision: str  # "bf16", "fp16" or "fp32"
    cuda_visible_devices: str | None

    @property
    def torch_dtype(self) -> Any:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_cuda_visible_devices(value: str | None) -> None:
    # Must happen before torch initialises CUDA, or it has no effect.
    if value is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(value)


def detect(bf16_requested: bool, cuda_visible_devices: str | None = None) -> Environment:
    """Pick device and precision; on CPU always fp32, since bf16 matmul is ~300x slower there."""
    apply_cuda_visible_devices(cuda_visible_devices)
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        if bf16_requested:
            log.warning(
                "bf16 requested but no GPU is available: running in fp32 on CPU "
                "(bf16 matmul is ~300x slower than fp32 on CPUs)"
            )
        return Environment("cpu", _cpu_name(), "fp32", visible)
    name = torch.cuda.get_device_name(0)
    if not bf16_requested:
        precision = "fp32"
    elif torch.cuda.is_bf16_supported():
        precision = "bf16"
    else:
        log.warning("bf16 requested but %s does not support it: training in fp16", name)
        precision = "fp16"
    return Environment("cuda", f"{torch.cuda.device_count()} x {name}", precision, visible)


def _cpu_name() -> str:
    import platform

    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def describe_devices() -> str:
    """The GPUs (index, name, memory, bf16) and the CPU, one per line: to choose num_processes and precision."""
    import torch

    lines = [f"CPU: {_cpu_name()}"]
    if not torch.cuda.is_available():
        return "\n".join(["GPUs: none (no CUDA device visible): training runs on the CPU, in fp32", *lines])
    count = torch.cuda.device_count()
    lines.insert(0, f"GPUs: {count} (num_processes={count} trains on all of them)")
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        bf16 = "bf16" if torch.cuda.get_device_capability(i) >= (8, 0) else "no bf16 (fp16 instead)"
        lines.insert(i + 1, f"  cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB, {bf16}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Capacity:
    memory_total: int  # bytes: the machine's RAM, or cuda:0's memory
    memory_available: int  # bytes free now
    matmul_flops: float  # a square matrix product's rate in the training precision, measured now


def capacity(env: Environment, seconds: float = 0.3) -> Capacity:
    """Memory and a brief matmul benchmark of the device `env` trains on."""
    import torch

    if env.device == "cuda":
        free, total = torch.cuda.mem_get_info(0)
        return Capacity(total, free, matmul_rate("cuda", env.torch_dtype, 4096, seconds))
    free, total = _cpu_memory()
    return Capacity(total, free, matmul_rate("cpu", env.torch_dtype, 2048, seconds))


def matmul_rate(device: str, dtype: Any, n: int, seconds: float) -> float:
    """FLOP/s of an n x n matrix product on `device`: the best of repeats for `seconds`, after one warm-up."""
    import time

    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        best = max(best, 2 * n**3 / (now - started))
        if now > end:
            return best


def _cpu_memory() -> tuple[int, int]:
    """(available, total) bytes of RAM, as the kernel counts MemAvailable."""
    import psutil

    memory = psutil.virtual_memory()
    return memory.available, memory.total

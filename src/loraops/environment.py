"""Device and precision: what the hardware can do, decided once before loading a model."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loraops.errors import ConfigError

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
    # Must happen before torch initialises CUDA (a process group, a device count), or it has no effect.
    if value is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(value)


def first_visible_gpu() -> str:
    """The id CUDA calls cuda:0 here: the first entry of CUDA_VISIBLE_DEVICES, or 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def native_bf16() -> bool:
    """bf16 in hardware (Ampere, sm80, and later). torch's default check also counts emulation, which makes
    T4s and V100s train bf16 several times slower than fp16."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.4 had no such argument and no emulation to count
        return bool(torch.cuda.is_bf16_supported())


def cuda_available(device: str = "auto") -> bool:
    """Whether to use CUDA. A GPU this torch cannot use (a driver too old for its CUDA, a CPU-only build on a
    GPU machine) stops here rather than training on the CPU for days, unless device=cpu was asked for."""
    import torch

    if device == "cpu":
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True
    why = next((str(w.message) for w in caught if "CUDA initialization" in str(w.message)), None)
    if why is None and _nvidia_gpu_present():
        why = f"this torch ({torch.__version__}) was built without CUDA"
    if why is None and device == "auto":
        return False
    raise ConfigError(
        f"device={device}: a GPU is {'present' if why else 'asked for'} but torch cannot use it"
        f"{f' ({why.splitlines()[0]})' if why else ''}; install a torch build for this machine's CUDA driver, "
        "or train on the CPU with device=cpu"
    )


def _nvidia_gpu_present() -> bool:
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")  # GPUs hidden on purpose: the CPU was asked for
    return not hidden and Path("/dev/nvidia0").exists()


def detect(bf16_requested: bool, cuda_visible_devices: str | None = None, device: str = "auto") -> Environment:
    """Pick device and precision; on CPU always fp32, since bf16 matmul is ~300x slower there."""
    apply_cuda_visible_devices(cuda_visible_devices)
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not cuda_available(device):
        if bf16_requested:
            log.warning(
                "bf16 requested but no GPU is used: running in fp32 on CPU "
                "(bf16 matmul is ~300x slower than fp32 on CPUs)"
            )
        return Environment("cpu", _cpu_name(), "fp32", visible)
    name = torch.cuda.get_device_name(0)
    if not bf16_requested:
        precision = "fp32"
    elif native_bf16():
        precision = "bf16"
    else:
        log.warning("bf16 requested but %s has no bf16 in hardware: training in fp16", name)
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
    use = "training uses all of them, one process each (num_processes=1: one)" if count > 1 else "training uses it"
    lines.insert(0, f"GPUs: {count} ({use})")
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


def gpu_count(device: str = "auto") -> int:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES applied); 0 when training runs on the CPU."""
    import torch

    return torch.cuda.device_count() if cuda_available(device) else 0


def usable_cpus(affinity: set[int] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (containers,
    batch schedulers), where os.cpu_count() says what the machine has."""
    cpus = len(affinity if affinity is not None else os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_quota(root: Path) -> int | None:
    """cgroup v2's cpu.max ("max 100000", or "150000 100000" for 1.5 CPUs), rounded up; v1's cfs files."""
    import math

    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def use_cpu_threads(requested: int | None, processes: int) -> int:
    """Set torch's CPU threads: `requested`, OMP_NUM_THREADS where set, or the usable CPUs shared among the
    processes; warn when the
    machine is busy, since threads that outnumber the free cores spin against each other (a 3 s training step
    took 30-90 s beside one other busy process, and 3 s with one thread each)."""
    import torch

    usable = usable_cpus()
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = torch.get_num_threads()  # chosen already, by the user or the launcher (torchrun sets 1)
    else:
        threads = requested or max(1, usable // max(1, processes))
        torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    if load >= usable - 0.5:
        log.warning(
            "this machine is busy (load %.1f on %d usable CPUs): training will be slower than it could be; "
            "using %d torch thread%s per process (cpu_threads=N to choose)",
            load,
            usable,
            threads,
            "" if threads == 1 else "s",
        )
    return threads

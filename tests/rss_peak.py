"""Train through `loraops.train` in a fresh process; print how far resident memory rose during the training loop.

    python tests/rss_peak.py CONFIG_DIR OVERRIDE...

The baseline is taken when the Trainer starts, once the loaded weights are resident (safetensors maps them
from the file, so they would otherwise be counted as they are first read), after the kernel's high-water
mark has been reset (/proc/self/clear_refs). Prints one line: RSS_PEAK <bytes above the baseline>.
"""

from __future__ import annotations

import gc
import re
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

import loraops.train as train_module
from loraops.config import TrainConfig, load_config


def status(key: str) -> int:
    """A /proc/self/status figure (VmRSS, VmHWM) in bytes."""
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


class HighWater(TrainerCallback):
    baseline = peak = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        for parameter in model.parameters():
            parameter.detach().sum()  # read every page of the weights
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        HighWater.baseline = status("VmRSS")

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        HighWater.peak = status("VmHWM")


class Measured(train_module.LoraopsTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_callback(HighWater())


if __name__ == "__main__":
    train_module.LoraopsTrainer = Measured
    train_module.train(load_config(TrainConfig, Path(sys.argv[1]), "train", sys.argv[2:]))
    print(f"RSS_PEAK {HighWater.peak - HighWater.baseline}")

"""TensorBoard event files in the run folder's logs/: the Trainer's curves while training, eval scores after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraops.records import Scores
from loraops.runs import RunDir


def trainer_callback(run: RunDir) -> Any:
    """transformers' own TensorBoard callback, writing into the run's logs/ (close it with `writer.close()`)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.logs_dir)))


def write_eval(run: RunDir, scores: Mapping[str, Scores], step: int) -> None:
    """Each split's scores as eval/<split>/<metric>, at the training step the adapter was saved at."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run.logs_dir))
    try:
        for split, values in scores.items():
            for key, value in values.items():
                writer.add_scalar(f"eval/{split}/{key}", value, step)
    finally:
        writer.close()

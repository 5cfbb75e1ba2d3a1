"""Packing: several examples per row of `max_length` tokens, each one blind to the others.

Rows are filled best-fit decreasing (the longest example first, into the fullest row it still fits).
Each example's position ids restart at 0, and the row carries no attention mask: transformers then
reads the restarts as sequence boundaries and keeps attention inside each example (a block-diagonal
mask for sdpa and eager, varlen kernels for flash attention). The first label of every example is
dropped, so the last token of one example is never trained to predict the first of the next; alone,
that label is never used either (the causal loss predicts token i+1 from token i).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from loraops.data.tokenize import IGNORE_INDEX


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity`, in as few bins as best-fit finds."""
    bins: list[list[int]] = []
    # (room left, bin index), sorted: the fullest bin that still fits is the first with room >= length.
    rooms: list[tuple[int, int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"example {index} has {length} tokens, more than a row's {capacity}")
        at = bisect.bisect_left(rooms, (length, -1))
        if at == len(rooms):
            bins.append([index])
            room, number = capacity - length, len(bins) - 1
        else:
            room, number = rooms.pop(at)
            bins[number].append(index)
            room -= length
        bisect.insort(rooms, (room, number))
    return bins


def pack_rows(rows: list[dict[str, Any]], capacity: int) -> list[dict[str, Any]]:
    """Rows of input_ids/labels/position_ids, each holding whole examples that fit in `capacity` tokens."""
    packed = []
    for members in best_fit_decreasing([len(r["input_ids"]) for r in rows], capacity):
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for index in members:
            ids, labels = rows[index]["input_ids"], rows[index]["labels"]
            row["input_ids"] += ids
            row["labels"] += [IGNORE_INDEX, *labels[1:]]
            row["position_ids"] += list(range(len(ids)))
        packed.append({**row, "length": len(row["input_ids"])})  # group_by_length reads it
    return packed


@dataclass(frozen=True)
class PackingStats:
    examples: int
    rows: int
    capacity: int
    tokens: int

    @property
    def fill(self) -> float:
        """Share of the rows' capacity that holds tokens rather than padding."""
        return self.tokens / (self.rows * self.capacity) if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "rows": self.rows, "capacity": self.capacity, "fill": round(self.fill, 4)}


def packing_stats(rows: list[dict[str, list[int]]], packed: list[dict[str, list[int]]], capacity: int) -> PackingStats:
    return PackingStats(len(rows), len(packed), capacity, sum(len(r["input_ids"]) for r in packed))


@dataclass
class PackedCollator:
    """Batches packed rows without an attention mask, which would hide the examples' boundaries.

    Rows of a batch are padded to the longest; the padding is a sequence of its own (its position ids
    restart at 0 too), so no example attends to it, and it carries no labels. With `flatten` (flash
    attention, which reads boundaries only from a single row) the batch becomes one row, with no padding.
    Unpacked rows (validation) go to `unpacked`, the usual padding collator.
    """

    pad_token_id: int
    unpacked: Any
    flatten: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if "position_ids" not in features[0]:
            return self.unpacked(features)
        keys = ("input_ids", "labels", "position_ids")
        if self.flatten:
            rows = [[token for f in features for token in f[key]] for key in keys]
            return {key: torch.tensor([row], dtype=torch.long) for key, row in zip(keys, rows)}
        width = max(len(f["input_ids"]) for f in features)
        fill = {
            "input_ids": lambda n: [self.pad_token_id] * n,
            "labels": lambda n: [IGNORE_INDEX] * n,
            "position_ids": lambda n: list(range(n)),
        }
        batch = {key: [list(f[key]) + fill[key](width - len(f[key])) for f in features] for key in keys}
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def real_token_mask(inputs: dict[str, Any], pad_token_id: int) -> Any:
    """1 for each token of a packed batch that belongs to an example, 0 for the collator's padding.

    The padding is each row's last sequence when that sequence starts with the pad id and trains
    nothing; an example never starts with the pad id (a chat turn or BOS opens it), even where the
    pad token is EOS, so EOS tokens inside examples still count.
    """
    import torch

    ids, positions, labels = inputs["input_ids"], inputs["position_ids"], inputs["labels"]
    mask = torch.ones_like(ids)
    for row in range(ids.shape[0]):
        start = int((positions[row] == 0).nonzero()[-1])
        if ids[row, start] == pad_token_id and bool((labels[row, start:] == IGNORE_INDEX).all()):
            mask[row, start:] = 0
    return mask

"""Packing: best-fit rows, and each example's logits and loss the same packed as alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loraops.data.packing import PackedCollator, best_fit_decreasing, pack_rows, real_token_mask
from loraops.data.tokenize import IGNORE_INDEX, encode


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(50, 120))
def test_best_fit_places_every_example_once_within_capacity(lengths: list[int], capacity: int) -> None:
    bins = best_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    # Best fit never leaves two bins that would fit in one.
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > capacity


def test_best_fit_fills_the_fullest_row_that_fits() -> None:
    # Decreasing: 7, 5, 4, 3, 1. The 3 goes with the 5 (room 3) rather than the 4 (room 4).
    bins = best_fit_decreasing([4, 7, 3, 5, 1], 8)
    assert sorted(sorted(b) for b in bins) == [[0, 4], [1], [2, 3]] or sorted(sorted(b) for b in bins) == [
        [0],
        [1, 4],
        [2, 3],
    ]
    assert len(bins) == 3
    with pytest.raises(ValueError, match="more than a row"):
        best_fit_decreasing([9], 8)


def test_packed_rows_restart_positions_and_never_train_across_examples() -> None:
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [IGNORE_INDEX, 9]}]
    [row] = pack_rows(rows, 8)
    assert row["position_ids"] == [0, 1, 2, 0, 1]
    assert row["input_ids"] == [5, 6, 7, 8, 9]
    # Token 8 (the next example's first) is not a target of token 7, the previous example's last.
    assert row["labels"] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]
    assert row["length"] == 5


CONVERSATIONS = [
    [{"role": "user", "content": "Sum of A1:A9?"}, {"role": "assistant", "content": "=SUM(A1:A9)"}],
    [
        {"role": "user", "content": "Explain FLOWROLL in one long sentence, please, with an example."},
        {"role": "assistant", "content": "FLOWROLL(range, n) returns the rolling sum of range over n cells."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Mean of B2:B5"},
        {"role": "assistant", "content": "=AVERAGE(B2:B5)"},
    ],
]


def _rows(tokenizer: Any) -> list[dict[str, list[int]]]:
    encoded = [encode(tokenizer, messages, 256) for messages in CONVERSATIONS]
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


def _model(tiny_model_dir: Path, attention: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention).eval()


def _alone(model: Any, row: dict[str, list[int]]) -> tuple[Any, Any]:
    """Logits and summed loss of one example on its own, the standard way."""
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    labels = torch.tensor(row["labels"])
    return logits, F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("flatten", [False, True])
def test_each_example_has_the_same_logits_and_loss_packed_as_alone(
    tiny_model_dir: Path, tokenizer: Any, attention: str, flatten: bool
) -> None:
    import torch
    import torch.nn.functional as F

    model = _model(tiny_model_dir, attention)
    rows = _rows(tokenizer)
    capacity = sum(len(r["input_ids"]) for r in rows[:3])  # three examples share a row, one is alone (padded)
    packed = pack_rows(rows, capacity)
    assert len(packed) == 2 and any(r["position_ids"].count(0) >= 2 for r in packed)
    batch = PackedCollator(tokenizer.pad_token_id, unpacked=None, flatten=flatten)(packed)
    assert "attention_mask" not in batch
    with torch.no_grad():
        # Without a KV cache, as training runs: transformers reads packed boundaries only then.
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    flat_logits, flat_ids = logits.reshape(-1, logits.shape[-1]), batch["input_ids"].reshape(-1)
    # Find every example in the batch by its tokens and compare it with the example run alone.
    found = 0
    for row in rows:
        n = len(row["input_ids"])
        starts = [s for s in range(len(flat_ids) - n + 1) if flat_ids[s : s + n].tolist() == row["input_ids"]]
        assert starts, "example missing from the packed batch"
        alone_logits, alone_loss = _alone(model, row)
        packed_logits = flat_logits[starts[0] : starts[0] + n]
        torch.testing.assert_close(packed_logits, alone_logits, atol=1e-5, rtol=1e-4)
        labels = torch.tensor(row["labels"])
        packed_loss = F.cross_entropy(packed_logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")
        torch.testing.assert_close(packed_loss, alone_loss, atol=1e-4, rtol=1e-5)
        found += 1
    assert found == len(rows)


def test_the_packed_batch_loss_is_the_sum_of_the_examples_losses(tiny_model_dir: Path, tokenizer: Any) -> None:
    """Through the trained path: the LM head at labelled positions only, and the labelled loss."""
    import torch

    from loraops.trainer import LabelledPositions, labelled_loss

    model = _model(tiny_model_dir, "sdpa")
    rows = _rows(tokenizer)
    batch = PackedCollator(tokenizer.pad_token_id, unpacked=None)(pack_rows(rows, 90))
    positions = LabelledPositions(model)
    positions.set_from(batch["labels"])
    with torch.no_grad():
        outputs = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    positions.mask = None
    total = labelled_loss(outputs, batch["labels"], num_items_in_batch=1)
    expected = sum(_alone(model, row)[1] for row in rows)
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-5)


def test_padding_is_not_counted_as_tokens_but_eos_inside_examples_is(tokenizer: Any) -> None:
    rows = _rows(tokenizer)
    packed = pack_rows(rows, 200)
    packed.append(pack_rows(rows[2:3], 200)[0])  # a short row: padded in the batch
    batch = PackedCollator(tokenizer.pad_token_id, unpacked=None)(packed)
    real = sum(len(r["input_ids"]) for r in packed)
    assert batch["input_ids"].numel() > real
    assert int(real_token_mask(batch, tokenizer.pad_token_id).sum()) == real
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case the mask exists for


def test_unpacked_rows_go_to_the_usual_collator(tokenizer: Any) -> None:
    calls = []
    collate = PackedCollator(tokenizer.pad_token_id, unpacked=lambda features: calls.append(features) or "padded")
    assert collate([{"input_ids": [1, 2], "labels": [1, 2]}]) == "padded" and calls


def test_training_with_packing_counts_the_same_tokens_and_reports_the_rows(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    from loraops.cli import main

    runs = {}
    for packing in ("false", "true"):
        out = tmp_path / f"runs-{packing}"
        overrides = [o for o in tiny_overrides if not o.startswith("output_dir=")]
        assert (
            main(
                [
                    "train",
                    *overrides,
                    f"output_dir={out}",
                    f"packing={packing}",
                    "epochs=1",
                    "max_length=128",
                    "eval_strategy=no",
                ]
            )
            == 0
        )
        runs[packing] = json.loads((out / "latest" / "metrics.json").read_text())
    unpacked, packed = runs["false"], runs["true"]
    assert packed["data"]["packing"]["rows"] < packed["data"]["packing"]["examples"] == unpacked["data"]["examples"]
    assert unpacked["data"]["packing"] is None
    assert packed["train_tokens"] == unpacked["train_tokens"] == unpacked["data"]["tokens"]

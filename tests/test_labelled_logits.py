"""The LM head and loss only at trained positions: the same loss and gradients as the standard path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("num_items", [None, 37])
def test_same_loss_and_gradients_as_the_full_head(tiny_model_dir: Path, num_items: int | None) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from loraops.trainer import LabelledPositions, labelled_loss

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights="gaussian"),
    )
    ids = torch.randint(5, 1000, (3, 12))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0  # right padding, as the collator pads
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[1, 9:] = -100
    labels[2, 7] = -100  # a masked token inside an answer (weight 0 turns, tool turns)

    def run(sparse: bool) -> tuple[Any, list[Any]]:
        model.zero_grad()
        if sparse:
            positions = LabelledPositions(model)
            positions.set_from(labels)
            loss = labelled_loss(model(input_ids=ids, attention_mask=attention), labels, num_items)
            positions.mask = None
            positions.handle.remove()
        else:
            kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
            loss = model(input_ids=ids, attention_mask=attention, labels=labels, **kwargs).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full_loss, full_grads = run(sparse=False)
    loss, grads = run(sparse=True)
    assert torch.allclose(loss, full_loss, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, full_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # With no mask set, the head sees every position: generation is untouched.
    positions = LabelledPositions(model)
    assert model(input_ids=ids).logits.shape == (3, 12, model.config.vocab_size)
    positions.handle.remove()

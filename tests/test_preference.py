"""Preference tuning (method=dpo|orpo|kto): every layout read and shown by `check`, bad pairs refused, each
method trained on the tiny model, the reference, init_adapter, and the keys each method reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, write_jsonl

from loraops.check import check, format_report
from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.errors import ConfigError, DataError
from loraops.runs import RunDir

END = "<|im_end|>"
PAIRS = [
    {"prompt": f"Rolling sum of A1:A{n} over {n % 7 + 2}", "chosen": f"=FLOWROLL(A1:A{n}, {n % 7 + 2})",
     "rejected": f"=DRIFT(A1:A{n}, {n % 7 + 2})"}
    for n in range(10, 26)
]  # fmt: skip


def config(data: Path, *overrides: str, model: Path | None = None) -> TrainConfig:
    keys = [f"dataset_path={data}", f"output_dir={data.parent / 'runs'}", "val_path=null", *overrides]
    if model is not None:
        keys += [f"model_name={model}", "batch_size=4", "lr=5e-3", "logging_steps=1", "lora_r=4", "lora_alpha=8"]
    return load_config(TrainConfig, CONFIGS, "train", keys)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# Each layout loraops reads as pairs: (record, extra overrides). The prompt is "Q?", the answers "good"/"bad".
LAYOUTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "trl-standard": ({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, []),
    "trl-conversational": ({"prompt": [_user("Q?")], "chosen": [_bot("good")], "rejected": [_bot("bad")]}, []),
    "implicit-prompt (HH-RLHF)": (
        {"chosen": [_user("Q?"), _bot("good")], "rejected": [_user("Q?"), _bot("bad")]},
        [],
    ),
    "llama-factory sharegpt": (
        {
            "conversations": [{"from": "human", "value": "Q?"}],
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        },
        [],
    ),
    "messages + chosen/rejected": ({"messages": [_user("Q?")], "chosen": _bot("good"), "rejected": _bot("bad")}, []),
    "openai preference": (
        {
            "input": {"messages": [_user("Q?")]},
            "preferred_output": [_bot("good")],
            "non_preferred_output": [_bot("bad")],
        },
        [],
    ),
    "columns": (
        {"question": "Q?", "better": "good", "worse": "bad"},
        ["columns={prompt:question,chosen:better,rejected:worse}"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_shows_each_layout_as_one_prompt_and_two_trained_answers(
    layout: str, tmp_path: Path, default_model_dir: Path
) -> None:
    record, overrides = LAYOUTS[layout]
    write_jsonl(tmp_path / "data" / "prefs.jsonl", [record])
    report = check(config(tmp_path / "data", "method=dpo", *overrides))
    shown = report.example
    prompt, answers = shown.split("chosen answer:\n")
    assert prompt.startswith("prompt:\n") and prompt.count("Q?") == 1 and "[[" not in prompt
    assert prompt.rstrip("\n").endswith("<|im_start|>assistant")  # the prompt ends where the answer starts
    assert answers == f"[[good{END}]]\nrejected answer:\n[[bad{END}]]"
    assert report.stats.preference == {"pairs": 1} and report.stats.examples == 1
    assert "preference examples: 1 pairs" in format_report(report)


def test_kto_reads_labelled_answers_and_unpairs_pairs(tmp_path: Path, default_model_dir: Path) -> None:
    records = [
        {"prompt": "Q?", "completion": "good", "label": True},
        {"messages": [_user("Q?"), _bot("bad")], "label": False},
        {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
    ]
    write_jsonl(tmp_path / "data" / "kto.jsonl", records)
    report = check(config(tmp_path / "data", "method=kto"), example_index=1)
    assert report.stats.preference == {"pairs": 1, "desirable": 1, "undesirable": 1}
    assert report.example.endswith(f"undesirable answer:\n[[bad{END}]]") and report.example.count("Q?") == 1


def test_bad_pairs_are_refused_with_file_and_line(tmp_path: Path, default_model_dir: Path) -> None:
    records = [
        {"prompt": "Q?", "chosen": "same", "rejected": "same"},
        {"prompt": "Q?", "chosen": "good", "rejected": ""},
        {"chosen": [_user("Q?"), _bot("a")], "rejected": [_user("Other?"), _bot("b")]},
        {"prompt": "Q?", "completion": "plain SFT data"},
        {"prompt": "Q?", "completion": "one answer", "label": True},
        {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
    ]
    path = write_jsonl(tmp_path / "data" / "prefs.jsonl", records)
    with pytest.raises(DataError) as caught:
        check(config(tmp_path / "data", "method=dpo"))
    text = str(caught.value)
    for line, fragment in (
        (1, "answers are the same"),
        (2, "the `rejected` answer is empty"),
        (3, "differ before their answers (turn 1, a user turn)"),
        (4, "this record has neither"),
        (5, "set method=kto"),
    ):
        assert f"{path}:{line}: " in text and fragment in text
    assert f"{path}:6" not in text
    assert main(["check", f"dataset_path={tmp_path / 'data'}", "val_path=null", "method=dpo"]) == 2


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["beta=0.2"], "beta=0.2 is read by method=dpo/orpo/kto only"),
        (["method=dpo", "desirable_weight=2"], "desirable_weight=2.0 is read by method=kto only"),
        (["method=orpo", "loss_type=ipo"], "loss_type='ipo' is read by method=dpo/kto only"),
        (["method=kto", "loss_type=ipo"], "method=kto takes one of kto, apo_zero_unpaired"),
        (["method=dpo", "packing=true"], "packing=True is read by method=sft only"),
        (["method=dpo", "preference=chosen"], "preference='chosen' is read by method=sft only"),
        (["method=kto", "select_metric=reward_accuracy"], "use select_metric=reward_margin"),
        (["select_metric=reward_margin"], "measured by preference methods"),
        (["method=dpo", "reasoning=mask"], "reasoning=mask leaves a gap"),
    ],
)
def test_keys_of_another_method_are_refused_not_ignored(overrides: list[str], fragment: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        config(tmp_path, *overrides)


def test_estimate_counts_both_answers_of_a_pair(tmp_path: Path, default_model_dir: Path) -> None:
    write_jsonl(tmp_path / "data" / "prefs.jsonl", PAIRS)
    chosen_only = check(config(tmp_path / "data", "preference=chosen")).estimate
    pairs = check(config(tmp_path / "data", "method=dpo")).estimate
    assert chosen_only is not None and pairs is not None
    assert pairs.plan.peak_rows == 2 * chosen_only.plan.peak_rows
    assert pairs.activations > chosen_only.activations and pairs.seconds_per_epoch > chosen_only.seconds_per_epoch


def _trained(tmp_path: Path, model: Path, method: str, *overrides: str) -> tuple[Path, dict[str, Any]]:
    from loraops.train import train

    write_jsonl(tmp_path / "data" / "prefs.jsonl", PAIRS)
    keys = [f"method={method}", "epochs=2", "val_fraction=0.25", "val_metrics=[]", *overrides]
    cfg = config(tmp_path / "data", *keys, model=model)
    run = train(cfg).run_dir
    return run, json.loads((run / "metrics.json").read_text())


# dpo: in the end-to-end test below. kto trains on each pair's two answers apart: one epoch is as many steps.
@pytest.mark.parametrize("method, select, epochs", [("orpo", "reward_accuracy", 2), ("kto", "reward_margin", 1)])
def test_each_method_lowers_its_loss_and_saves_an_adapter_peft_loads(
    method: str, select: str, epochs: int, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, metrics = _trained(tmp_path, tiny_model_dir, method, f"select_metric={select}", f"epochs={epochs}")
    assert metrics["final_logged_loss"] < metrics["first_logged_loss"]
    validation = metrics["validation"]
    assert validation["select_metric"] == select and validation["best"]["value"] == max(
        point[select] for point in validation["curve"]
    )
    assert metrics["data"]["preference"]["pairs"] + validation["data"]["preference"]["pairs"] == len(PAIRS)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "model")
    assert list(model.peft_config) == ["default"] and not (run / "model" / "ref").exists()
    assert RunDir(run).read_config()["method"] == method


def test_the_reference_is_the_base_with_the_adapter_off_and_no_second_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import torch

    from loraops import environment, preference
    from loraops.data.prepare import prepare_data
    from loraops.loading import load_causal_lm, load_tokenizer
    from loraops.lora import apply_lora
    from loraops.runs import RunDir

    write_jsonl(tmp_path / "data" / "prefs.jsonl", PAIRS)
    cfg = config(tmp_path / "data", "method=dpo", "max_steps=4", model=tiny_model_dir)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(cfg, tokenizer, str(tiny_model_dir))
    model = apply_lora(load_causal_lm(str(tiny_model_dir), torch.float32), cfg)
    weights = sum(p.numel() for p in model.parameters())
    args = preference.arguments(cfg, RunDir(tmp_path / "run"), environment.detect(False, None, "cpu"), False)
    trainer = preference.trainer(cfg, args, model, tokenizer, data.rows, None)
    trainer.train()
    assert trainer.ref_model is None
    adapter = sum(p.numel() for n, p in model.named_parameters() if ".default." in n)
    assert sum(p.numel() for p in model.parameters()) == weights + adapter  # a frozen adapter copy, not a model
    batch = trainer.data_collator(data.rows[:4])
    ref_chosen, _ = trainer.compute_ref_log_probs(model, batch)
    with model.disable_adapter():
        base_chosen, _ = trainer.compute_ref_log_probs(model, batch)
    policy = _logps(model, batch)
    assert torch.allclose(ref_chosen, base_chosen, atol=1e-5)
    assert not torch.allclose(policy[: len(ref_chosen)], ref_chosen, atol=1e-3)  # the adapter did train


def _logps(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    tokens = batch["input_ids"][:, 1:]
    per_token = torch.log_softmax(logits.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return (per_token * batch["completion_mask"][:, 1:]).sum(-1)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("lora_r=8", "that adapter has lora_r=4; set the same for this run"),
        ("lora_init=pissa", "lora_init=pissa would start a new adapter"),
        ("init_adapter=/nonexistent/run", "no such run folder or adapter"),
        ("model_name=default", "that adapter was trained on"),
    ],
)
def test_init_adapter_must_fit_this_run(
    override: str, fragment: str, tmp_path: Path, tiny_model_dir: Path, trained_run: Path
) -> None:
    from loraops.train import preflight

    write_jsonl(tmp_path / "data" / "prefs.jsonl", PAIRS)
    cfg = config(tmp_path / "data", f"init_adapter={trained_run}", "method=dpo", model=tiny_model_dir)
    with pytest.raises(ConfigError, match=fragment):
        preflight(config(tmp_path / "data", *_keys(cfg), override))


def _keys(cfg: TrainConfig) -> list[str]:
    return [
        f"model_name={cfg.model_name}",
        f"init_adapter={cfg.init_adapter}",
        "method=dpo",
        "lora_r=4",
        "lora_alpha=8",
    ]


@pytest.mark.slow
def test_sft_then_dpo_then_eval_then_compare(tmp_path: Path, tiny_model_dir: Path, trained_run: Path) -> None:
    """The usual recipe end to end on the tiny model: DPO from the session's SFT run, evaluated on a preference
    split (its training pairs: the tiny model learns nothing general) and a generation split, compared with
    the base by preference accuracy under a guard on the other split, and the proof publish runs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraops.config import CompareConfig, EvalConfig
    from loraops.data.datafiles import sha256_file
    from loraops.eval.compare import compare, format_table
    from loraops.eval.evaluate import evaluate
    from loraops.publish.verify import verify_published

    keys = [f"init_adapter={trained_run}", "epochs=3", "beta=0.5", "select_metric=reward_accuracy"]
    run, metrics = _trained(tmp_path, tiny_model_dir, "dpo", *keys)
    # Started from the SFT adapter, whose frozen copy is the reference: the first step's margin is zero.
    assert metrics["first_logged_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert metrics["final_logged_loss"] < metrics["first_logged_loss"]
    assert metrics["validation"]["best"]["value"] == max(p["reward_accuracy"] for p in metrics["validation"]["curve"])
    assert json.loads((run / "manifest.json").read_text())["init_adapter"] == {
        "adapter_dir": str(trained_run / "model"),
        "sha256": sha256_file(trained_run / "model" / "adapter_model.safetensors"),
        "run": str(trained_run),
    }
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "model")
    assert list(model.peft_config) == ["default"] and not (run / "model" / "ref").exists()
    evalsets = tmp_path / "evalsets"
    write_jsonl(evalsets / "prefs.jsonl", PAIRS)
    write_jsonl(evalsets / "test.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS[:4]])
    common = [f"eval_dir={evalsets}", f"metrics_dir={tmp_path / 'metrics'}", "max_new_tokens=4", "batch_size=8"]
    tuned = evaluate(load_config(EvalConfig, CONFIGS, "eval", [f"model={run}", *common]))
    base = evaluate(load_config(EvalConfig, CONFIGS, "eval_baseline", [f"model_name={tiny_model_dir}", *common]))
    assert tuned.metrics["prefs"]["n"] == base.metrics["prefs"]["n"] == len(PAIRS)
    assert tuned.metrics["prefs"]["logp_margin"] > base.metrics["prefs"]["logp_margin"]
    assert "exact_match" in tuned.metrics["test"] and "preference_accuracy" not in tuned.metrics["test"]

    keys = {"run": str(run), "against": "base", "metrics_dir": str(tmp_path / "metrics")}
    keys |= {"primary_split": "prefs", "primary_metric": "preference_accuracy", "verify_samples": 8}
    keys |= {"guards": [{"split": "test", "metric": "exact_match", "max_drop": 50}], "artifacts_dir": str(tmp_path)}
    cfg = CompareConfig.model_validate(keys)
    result = compare(cfg)
    rows = {(r.split, r.metric): r for r in result.rows}
    accuracy = rows[("prefs", "preference_accuracy")]
    assert accuracy.p is not None and accuracy.low is not None and accuracy.low <= accuracy.delta <= accuracy.high
    assert rows[("prefs", "logp_margin")].delta > 0 and ("test", "exact_match") in rows
    assert result.verdict in ("IMPROVED", "INCONCLUSIVE", "NOT IMPROVED")
    assert "(by preference_accuracy)" in format_table(result) and "test: " in format_table(result)
    assert "every pair's likelier answer is the evaluated one" in verify_published(
        run / "model", RunDir(run), False, cfg
    )

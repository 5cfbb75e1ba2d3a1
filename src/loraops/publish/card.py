"""The model card (README.md) of a published run: Hub metadata plus a human-readable body.

Pure: everything comes in as plain data read from the run's records, so the card is easy to test
and the same run always renders the same card (a retried upload then changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import yaml

from loraops.config import CARD, TrainConfig, marked
from loraops.records import Comparison, ExportRecord, Manifest, RunMetrics

# The metrics shown per split; the rest are in the run's metrics and the comparison record.
CARD_METRICS = (("exact_match", "exact match %"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"))


@dataclass(frozen=True)
class CardInputs:
    run: str
    config: dict[str, Any]  # the run's records, as RunDir reads them
    metrics: RunMetrics
    manifest: Manifest
    base_model: str | None  # hub id, or None when the base is a private folder or file
    base_label: str  # how the body names the base model
    license: str | None
    merged: bool
    comparison: Comparison | None
    forced_reason: str | None  # set when --force overrode the gate
    load_from: str  # repo id or folder the usage snippet loads
    verification: str | None = None  # what reloading the published files showed
    local: bool = False  # a local publish: the adapter's base_model_name_or_path is a path on this machine
    gguf: ExportRecord | None = None  # the GGUF export whose files are published beside the model


def _dataset(config: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    # Names only: the paths on the training machine are private and mean nothing to readers.
    return {
        "name": PurePath(str(config.get("dataset_path", "data"))).name or "data",
        "sha256": manifest.data.dataset_sha256,
        "files": [{"name": PurePath(f.path).name, "sha256": f.sha256} for f in manifest.data.files],
    }


def _hub_dataset(config: dict[str, Any]) -> str | None:
    source = config.get("data_source") or {}
    return str(source["repo_id"]) if source.get("type") == "hub" and source.get("repo_id") else None


def metadata(c: CardInputs) -> dict[str, Any]:
    dataset = _dataset(c.config, c.manifest)
    meta: dict[str, Any] = {}
    if c.base_model:
        meta["base_model"] = c.base_model
    meta["library_name"] = "transformers" if c.merged else "peft"
    if c.license:
        meta["license"] = c.license
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["loraops", "lora", "peft", "merged" if c.merged else "adapter", "text-generation"]
    if c.gguf is not None:
        meta["tags"].append("gguf")
    hub_dataset = _hub_dataset(c.config)
    if hub_dataset:  # the Hub's `datasets` are Hub dataset ids; a local folder is named in the body instead
        meta["datasets"] = [hub_dataset]
    if c.forced_reason:
        meta["forced"] = True
    meta["loraops"] = {"run": c.run, "dataset_sha256": dataset["sha256"], "data_files": dataset["files"]}
    return meta


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "n/a" if value is None else str(value)


def _what(c: CardInputs) -> list[str]:
    kind = "a standalone model: the LoRA weights are merged into" if c.merged else "a LoRA adapter (PEFT) for"
    m = c.metrics
    return [
        f"This is {kind} **{c.base_label}**, fine-tuned with loraops (run `{c.run}`).",
        "",
        f"Training: {_fmt(m.global_steps)} optimizer steps over {_fmt(m.epochs_completed)} epochs on "
        f"{m.data.get('examples', 'n/a')} examples, {_fmt(m.precision)} on {_fmt(m.device)}; "
        f"logged loss {_fmt(m.first_logged_loss)} → {_fmt(m.final_logged_loss)}.",
    ]


def _hyperparameters(c: CardInputs) -> list[str]:
    rows = [f"| `{key}` | {_fmt(c.config.get(key))} |" for key in marked(TrainConfig, CARD) if key in c.config]
    return ["## Hyperparameters", "", "| key | value |", "| --- | --- |", *rows]


def _data_section(c: CardInputs) -> list[str]:
    dataset, stats = _dataset(c.config, c.manifest), c.metrics.data
    # Counts only: the other entries (which files, which records) name paths on the training machine.
    counts = ", ".join(
        f"{k.replace('_', ' ')} {v}"
        for k, v in stats.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    formats = ", ".join(f"{k} {v}" for k, v in stats.get("formats", {}).items())
    lines = ["## Data", "", f"Dataset `{dataset['name']}`, sha256 `{dataset['sha256']}`.", ""]
    lines += [f"Counts: {counts or 'n/a'}." + (f" Formats: {formats}." if formats else ""), ""]
    lines += ["| file | sha256 |", "| --- | --- |", *[f"| `{f['name']}` | `{f['sha256']}` |" for f in dataset["files"]]]
    return lines


def _eval_section(c: CardInputs) -> list[str]:
    lines = ["## Evaluation", ""]
    if c.comparison is None:
        return lines + ["Not evaluated against a reference."]
    cmp = c.comparison
    lines.append(
        f"Against `{cmp.reference}` ({cmp.reference_kind}); each cell is reference → fine-tuned, then "
        f"the paired delta of {cmp.primary_metric} with its {1 - cmp.alpha:.0%} bootstrap interval and p."
    )
    lines += [
        "",
        "| split | " + " | ".join(label for _, label in CARD_METRICS) + " | delta [interval] | p | fixed / broken |",
    ]
    lines.append("| --- |" + " --- |" * (len(CARD_METRICS) + 3))
    for split in dict.fromkeys(r.split for r in cmp.rows):  # in the comparison's order, once each
        row = {r.metric: r for r in cmp.rows if r.split == split}
        cells = [
            f"{_fmt(row[m].reference)} → {_fmt(row[m].fine_tuned)}" if m in row else "n/a" for m, _ in CARD_METRICS
        ]
        primary = row.get(cmp.primary_metric)
        if primary is not None and primary.delta is not None:
            cells += [f"{primary.delta:+.4g} [{primary.low:+.4g}, {primary.high:+.4g}]", f"{primary.p:.3g}"]
        else:
            cells += ["n/a", "n/a"]
        flips = cmp.flips.get(split)
        cells.append(f"{len(flips.get('fixed', []))} / {len(flips.get('broken', []))}" if flips else "n/a")
        n = c.metrics.eval.get(split, {}).get("n")
        lines.append(f"| {split}" + (f" ({n})" if n else "") + " | " + " | ".join(cells) + " |")
    lines += ["", f"Verdict: **{cmp.verdict}** on {cmp.primary_metric} ({cmp.primary_split}).", ""]
    lines += [f"- {reason}" for reason in cmp.reasons]
    return lines + (["", f"Published files checked: {c.verification}."] if c.verification else [])


def _usage(c: CardInputs) -> list[str]:
    base = c.base_model or c.base_label
    if c.merged:
        load = [f'model = AutoModelForCausalLM.from_pretrained("{c.load_from}")']
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
    else:
        load = [
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            f'model = PeftModel.from_pretrained(base, "{c.load_from}")',
        ]
        imports = "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer"
    return [
        "## Usage",
        "",
        "```python",
        imports,
        "",
        *load,
        f'tok = AutoTokenizer.from_pretrained("{c.load_from}")',
        'ids = tok.apply_chat_template([{"role": "user", "content": "..."}], add_generation_prompt=True,',
        '                              return_tensors="pt", return_dict=True)',
        "out = model.generate(**ids, max_new_tokens=64)",
        'print(tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        *_elsewhere(c),
    ]


def _elsewhere(c: CardInputs) -> list[str]:
    if c.merged or not c.local:
        return []
    return [
        "",
        "`adapter_config.json` names the base model as this machine holds it (`base_model_name_or_path`), so "
        "`PeftModel.from_pretrained` loads this folder here as is. Elsewhere, load the base yourself, as above "
        f"(`{c.base_model or c.base_label}`), and pass it: the adapter does not depend on where the base is.",
    ]


def _gguf_section(c: CardInputs) -> list[str]:
    record = c.gguf
    if record is None:
        return []
    carried = {role: name for role, name in record.files.items() if role in ("lora", "merged", "quantized")}
    lines = [
        "## GGUF: llama.cpp and Ollama",
        "",
        "Converted by llama.cpp's own converters (`loraops export`); the sha256 of each file here is the one "
        f"export ran: {record.engine.get('name')} {record.engine.get('version')} answered the prompts of "
        f"{', '.join(f'`{s}`' for s in record.splits)} greedily with it, against the fine-tuned model's answers.",
        "",
        "| what ran | files | split | identical answers | token agreement |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {a['artifact']} | {', '.join(f'`{f}`' for f in a['files'])} | {a['split']} ({a['examples']}) "
            f"| {a['exact']:.1%} | {a['tokens']:.1%} |"
            for a in record.agreement
        ],
        "",
        "```bash",
    ]
    if "lora" in carried:
        lines.append(f"llama-cli -m {record.files['base']} --lora {carried['lora']} -cnv   # the base model's GGUF")
    model = carried.get("quantized") or carried.get("merged")
    if model is not None:
        lines.append(f"llama-server -m {model} --port 8080")
    if "modelfile_merged" in record.files:
        lines.append(f"ollama create {c.run.lower()} -f {record.files['modelfile_merged']}")
    return lines + ["```"] + [f"- {note}" for note in record.notes if "quantis" in note]


def render_card(c: CardInputs) -> str:
    head = yaml.safe_dump(metadata(c), sort_keys=False, allow_unicode=True)
    title = f"# {c.run}: {'merged ' if c.merged else ''}LoRA fine-tune of {c.base_label}"
    warning = [f"> **Published with --force**: {c.forced_reason}", ""] if c.forced_reason else []
    sections = [_what(c), _hyperparameters(c), _data_section(c), _eval_section(c), _usage(c), _gguf_section(c)]
    sections = [section for section in sections if section]
    body = [title, "", *warning, *"\n\n".join("\n".join(s) for s in sections).splitlines()]
    return f"---\n{head}---\n\n" + "\n".join(body) + "\n"

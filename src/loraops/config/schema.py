"""The typed configuration of every command: keys, defaults, help, allowed values and their checks.

Each field's description is the single source for `--help`, the README reference tables and errors;
fields carry markers (`resumable`, `recorded`, `card`) that other modules ask for instead of listing keys.
Validation is pydantic's: a wrong type or an impossible value is refused before anything heavy starts.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from loraops import paths
from loraops.data.formats import (
    COLUMN_TARGETS,
    PREFERENCE_USES,
    PROMPT_COMPLETION_USES,
    REASONING_USES,
    TREE_PATHS,
)
from loraops.data.formats import FORMATS as DATA_FORMATS
from loraops.errors import ConfigError
from loraops.records import METRICS, SCORED

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
DATA_SOURCE_TYPES = ("local", "lakefs", "hub")
STRATEGIES = ("epoch", "steps", "no")
LORA_INITS = ("default", "gaussian", "pissa", "olora")  # and pissa_niter_<n>: PiSSA by a fast randomized SVD
DEVICES = ("auto", "cuda", "cpu")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")  # or a hub kernel, "<org>/<repo>"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRACKING_MODES = ("tensorboard", "mlflow", "both")  # where runs, evaluations and verdicts are tracked
COMPARE_AGAINST = ("auto", "base", "published")
GLOB_PROBLEM = "must be a non-empty glob relative to its folder, e.g. *.jsonl"
MAX_SEED = 2**32 - 1  # numpy's seeds, which transformers.set_seed seeds too
# Preference tuning through TRL: its trainers and their loss types.
METHODS = ("sft", "dpo", "orpo", "kto")
PREFERENCE_METHODS = METHODS[1:]
REFERENCE_METHODS = ("dpo", "kto")  # those scored against a frozen reference (orpo needs none)
DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
KTO_LOSSES = ("kto", "apo_zero_unpaired")
# Validation metrics of the preference trainers (TRL's eval_rewards/...): selectable with select_metric.
REWARD_METRICS = {"reward_accuracy": "rewards/accuracies", "reward_margin": "rewards/margins"}
MIN_TEMPERATURE = 1e-5  # below it, logits divided by the temperature overflow; vLLM reads it as greedy too

# What a marker on a field means to the module that asks for it.
RESUMABLE = "resumable"  # may change when a run is resumed: it does not alter what the run computes
RECORDED = "recorded"  # written into each evaluated split's record: what produced the scores
CARD = "card"  # shown in the published model card's hyperparameter table


def one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _lora_init(value: str) -> str:
    if value not in LORA_INITS and not re.fullmatch(r"pissa_niter_[1-9]\d*", value):
        raise ValueError(f"must be one of {', '.join(LORA_INITS)}, or pissa_niter_<n> (PiSSA by a fast SVD)")
    return value


def _attention(value: str) -> str:
    if value not in ATTENTION and not re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", value):
        raise ValueError(f"must be one of {', '.join(ATTENTION)}, or a kernel of the Hugging Face hub (org/repo)")
    return value


def _all_in(choices: tuple[str, ...]) -> AfterValidator:
    def check(values: list[str]) -> list[str]:
        if any(v not in choices for v in values):
            raise ValueError(f"must be among {', '.join(choices)}")
        return values

    return AfterValidator(check)


def _relative_glob(pattern: str) -> str:
    if not pattern.strip() or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise ValueError(GLOB_PROBLEM)
    return pattern


def _known_columns(columns: dict[str, str] | None) -> dict[str, str] | None:
    if columns and not all(k in COLUMN_TARGETS and v for k, v in columns.items()):
        raise ValueError(f"must map some of {', '.join(COLUMN_TARGETS)} to your field names, e.g. {{prompt: question}}")
    return columns


def _steps_or_all(value: int) -> int:
    if value != -1 and value < 1:
        raise ValueError("must be -1 (all epochs) or at least 1")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def option(default: Any, help: str, *markers: str, **constraints: Any) -> Any:
    """A config key: its default, its help text, markers for the modules that ask, and pydantic constraints."""
    extra: dict[str, Any] | None = {marker: True for marker in markers} or None
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda: type(default)(default), description=help, json_schema_extra=extra)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def section(factory: Callable[[], BaseModel], help: str, *markers: str) -> Any:
    return Field(default_factory=factory, description=help, json_schema_extra={m: True for m in markers} or None)


DataFormat = Annotated[str, one_of(DATA_FORMATS)]
PromptCompletion = Annotated[str, one_of(PROMPT_COMPLETION_USES)]
Columns = Annotated[dict[str, str] | None, AfterValidator(_known_columns)]
Glob = Annotated[str, AfterValidator(_relative_glob)]
Tracking = Annotated[str, one_of(TRACKING_MODES)]
Experiment = Annotated[str, AfterValidator(_not_blank)]


class Schema(BaseModel):
    """Every config model: unknown keys refused, floats finite, numbers accepted where text is asked
    (`cuda_visible_devices=0`, `model_name=1234`), and defaults checked like given values."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        coerce_numbers_to_str=True,
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
    )


def _prompt_completion_field() -> Any:
    return option(
        "chat",
        "prompt/completion as two strings: chat (a question and its answer, in the chat template) or continuation "
        "(the completion goes on from the prompt's text, no template: TRL's standard form); lists of turns are chat.",
    )


def _tracking_field() -> Any:
    return option(
        "tensorboard",
        "Experiment tracking: tensorboard (event files in the run's logs/), mlflow (MLFLOW_TRACKING_URI, "
        "else the embedded store mlruns/mlflow.db), or both.",
        RESUMABLE,
    )


def _experiment_field() -> Any:
    return option(
        "loraops",
        "MLflow experiment that runs and evaluations are logged under (with tracking mlflow or both).",
        RESUMABLE,
    )


# Validation context of a config read back from a run's records: what this machine has installed does not
# matter then (a run trained elsewhere with tracking=mlflow still reads here without MLflow).
RECORDED_CONTEXT = {"recorded": True}


def _check_mlflow(tracking: str, info: ValidationInfo) -> None:
    """MLflow is optional: asking for it without it installed is the user's to fix now, not at the first log."""
    if tracking == "tensorboard" or (info.context or {}).get("recorded"):
        return
    try:
        found = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules, i.e. blocked
        found = False
    if not found:
        raise ConfigError(f"tracking={tracking!r} needs MLflow, which is not installed: pip install 'loraops[mlflow]'")


class DataSourceConfig(Schema):
    type: Annotated[str, one_of(DATA_SOURCE_TYPES)] = option(
        "local", "Where data files come from: `local` (under dataset_path), `lakefs` or `hub`."
    )
    repository: str | None = option(None, "lakeFS repository (type: lakefs).")
    ref: str = option("main", "lakeFS branch, tag or commit id; resolved to a commit id recorded in the manifest.")
    path: str = option("", "lakeFS path prefix; dataset_pattern is matched below it (its eval/ folder is skipped).")
    repo_id: str | None = option(None, "Hugging Face Hub dataset, e.g. `databricks/databricks-dolly-15k` (type: hub).")
    split: str = option("train", "Hub dataset split (type: hub).")
    revision: str | None = option(None, "Hub branch, tag or commit (null: main); resolved to a commit in the manifest.")
    subset: str | None = option(None, "Hub dataset subset (configuration name), where it has several.")

    @model_validator(mode="after")
    def _named(self) -> DataSourceConfig:
        if self.type == "lakefs" and not self.repository:
            raise ConfigError(
                f"data_source.repository={self.repository!r} must name the lakeFS repository when "
                "data_source.type is lakefs"
            )
        if self.type == "hub" and not self.repo_id:
            raise ConfigError(
                f"data_source.repo_id={self.repo_id!r} must name the Hub dataset when data_source.type is hub"
            )
        return self


class RemoteConfig(Schema):
    """`loraops remote` settings; the environment variable named in each help text (from the environment,
    then .env) overrides the key."""

    host: str | None = option(None, "SSH host of the GPU server (REMOTE_HOST).")
    user: str | None = option(None, "SSH user (REMOTE_USER); null: ssh's default.")
    dir: str = option("loraops", "Project folder on the server, relative to the home folder (REMOTE_DIR).")
    port: int | None = option(None, "SSH port (REMOTE_PORT); null: ssh's default.", ge=1, le=65535)
    ssh_key: str | None = option(None, "Private key file (REMOTE_SSH_KEY); null: ssh's default keys.")
    ssh_options: str = Field(
        "",
        description='Extra ssh options in one string, e.g. "-o ProxyJump=bastion" (REMOTE_SSH_OPTS).',
        validation_alias="REMOTE_SSH_OPTS",
    )
    python: str = option("python3", "The server's Python that creates its .venv (REMOTE_PYTHON).")
    packages_from: str | None = option(
        None, "A server Python whose installed packages (e.g. a CUDA torch) the .venv reuses (REMOTE_PACKAGES_FROM)."
    )
    cuda_visible_devices: str | None = Field(
        None,
        description="GPUs the remote job may use (CUDA_VISIBLE_DEVICES there; from CUDA_VISIBLE_DEVICES here).",
        validation_alias="CUDA_VISIBLE_DEVICES",
    )
    hf_home: str | None = Field(
        None,
        description="The server's Hugging Face cache folder (HF_HOME there; from HF_HOME here).",
        validation_alias="HF_HOME",
    )
    push_gitignored: bool = option(
        False, "Push files that .gitignore ignores too (REMOTE_PUSH_GITIGNORED); .env files are never pushed."
    )


def _remote_section() -> Any:
    return section(RemoteConfig, "Settings of `loraops remote` (SSH server).", RESUMABLE)


class TrainConfig(Schema):
    model_name: str = option(
        "default",
        "Base model: `default` (embedded SmolLM2-135M-Instruct), a local HF folder, a .gguf file, or a hub id.",
    )
    dataset_path: str = option(
        "data", "Folder holding the training files (its eval/ subfolder is never training data)."
    )
    dataset_pattern: Glob = option(
        "*", "Glob, relative to dataset_path, selecting the training files (.jsonl, .json, .parquet, .csv)."
    )
    data_format: DataFormat = option(
        "auto", "Record format: auto (detected per record) or one of: " + ", ".join(DATA_FORMATS[1:]) + "."
    )
    columns: Columns = option(
        None,
        "Your fields onto loraops' names, e.g. {prompt: question, completion: answer} or "
        "{instruction: instruction, input: context, output: response}; also for the validation file.",
    )
    system_prompt: str | None = option(None, "System turn added to conversations that have none.")
    skip_non_text: bool = option(
        False, "Drop (and count) records with images, audio or other non-text parts instead of refusing them."
    )
    preference: Annotated[str, one_of(PREFERENCE_USES)] = option(
        "refuse", "Preference data (chosen/rejected, KTO labels): refuse, or chosen (train on the preferred answers)."
    )
    method: Annotated[str, one_of(METHODS)] = option(
        "sft",
        "sft (supervised: learn the answers), or preference tuning on chosen/rejected pairs through TRL: dpo, "
        "orpo (no reference model; an SFT term on the chosen answers), kto (also single answers labelled "
        "true/false). The reference is the starting adapter, frozen: the base (a new adapter) or init_adapter.",
        CARD,
    )
    beta: float | None = option(
        None,
        "dpo/orpo/kto: strength of the preference term (dpo, kto: how far from the reference the model may move; "
        "orpo: the weight of the odds-ratio term); null: TRL's default, 0.1.",
        CARD,
        gt=0,
    )
    loss_type: str | None = option(
        None,
        "dpo: TRL's loss, one of " + ", ".join(DPO_LOSSES) + "; kto: " + " or ".join(KTO_LOSSES) + "; null: "
        "sigmoid (DPO's own) or kto.",
        CARD,
    )
    label_smoothing: float = option(
        0.0,
        "dpo (sigmoid, robust, exo_pair, bco_pair): the assumed share of pairs whose labels are flipped, in [0, 0.5).",
        CARD,
        ge=0,
        lt=0.5,
    )
    max_prompt_length: int | None = option(
        None,
        "dpo/orpo/kto: keep at most this many prompt tokens (the end of the prompt, nearest the answer) so long "
        "prompts leave room for the answers within max_length; null: no limit of its own.",
        CARD,
        ge=1,
    )
    desirable_weight: float = option(1.0, "kto: weight of the answers labelled true (desirable).", CARD, gt=0)
    undesirable_weight: float = option(1.0, "kto: weight of the answers labelled false (undesirable).", CARD, gt=0)
    init_adapter: str | None = option(
        None,
        "A finished run folder whose adapter training starts from (SFT, then DPO): trained further, and, for "
        "dpo and kto, frozen as the reference. Its base model and LoRA settings must be this run's.",
    )
    reasoning: Annotated[str, one_of(REASONING_USES)] = option(
        "train",
        "An assistant turn's reasoning (reasoning_content, thinking): train it, mask (kept as context, "
        "not trained) or drop (left out).",
    )
    prompt_completion: PromptCompletion = _prompt_completion_field()
    tree_paths: Annotated[str, one_of(TREE_PATHS)] = option(
        "best",
        "Message trees (OpenAssistant's export): best (the highest-ranked reply at each turn) or all (every "
        "path to a leaf, one conversation each).",
    )
    dedup: bool = option(False, "Drop records that repeat an earlier one (whitespace aside) before training; counted.")
    data_source: DataSourceConfig = section(DataSourceConfig, "Where the data comes from.")
    epochs: int = option(3, "Passes over the training data.", CARD, ge=1)
    max_steps: Annotated[int, AfterValidator(_steps_or_all)] = option(
        -1, "Stop after this many optimizer steps (-1: run all epochs). Handy for smoke tests.", CARD
    )
    batch_size: int = option(8, "Examples per device per step.", CARD, ge=1)
    gradient_accumulation_steps: int = option(
        1, "Steps whose gradients add up before one optimizer update.", CARD, ge=1
    )
    lr: float = option(5e-4, "Peak learning rate.", CARD, gt=0)
    lr_scheduler_type: Annotated[str, one_of(SCHEDULERS)] = option(
        "cosine", "Learning-rate schedule (transformers' SchedulerType names).", CARD
    )
    warmup_ratio: float = option(
        0.05, "Share of the optimizer steps spent warming the learning rate up, in [0, 1).", CARD, ge=0, lt=1
    )
    weight_decay: float = option(0.0, "AdamW weight decay.", CARD, ge=0)
    max_length: int = option(256, "Token limit per example; longer examples are truncated and counted.", CARD, ge=8)
    bf16: bool = option(True, "Train in bf16 where the GPU supports it (fp16 on older GPUs; always fp32 on CPU).")
    packing: bool = option(
        False,
        "Fill rows of max_length with several examples, each attending only to itself; batch_size then "
        "counts rows. Pays off when examples are much shorter than max_length (see make bench-train).",
    )
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass: less memory, ~30% slower."
    )
    labelled_logits_only: bool = option(
        True, "Apply the LM head and the loss only where a label is trained: the same loss and gradients, less work."
    )
    liger_kernel: bool = option(
        False,
        "CUDA: Liger's Triton kernels (RMSNorm, SwiGLU, RoPE, and a fused linear cross-entropy that never "
        "materialises the logits); pip install liger-kernel. Takes over from labelled_logits_only.",
    )
    torch_compile: bool = option(
        False, "Compile the model with torch.compile (measured slower on CPU: make bench-train)."
    )
    lora_r: int = option(16, "LoRA rank.", CARD, ge=1)
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r).", CARD, gt=0)
    lora_dropout: float = option(
        0.0,
        "Dropout on the LoRA path, in [0, 1). 0 by default: on the sample data 0.05 cost ~26% of the step "
        "time and gained nothing (README, Performance).",
        CARD,
        ge=0,
        lt=1,
    )
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_PROJECTIONS),
        description="Module names that get LoRA adapters.",
        json_schema_extra={CARD: True},
        min_length=1,
    )
    use_dora: bool = option(
        False, "DoRA: LoRA on the direction, with a trained magnitude per output (PEFT use_dora).", CARD
    )
    use_rslora: bool = option(False, "rsLoRA: scale by alpha/sqrt(r) instead of alpha/r, stabler at high rank.", CARD)
    lora_init: Annotated[str, AfterValidator(_lora_init)] = option(
        "default",
        "LoRA initialisation: default (B=0), gaussian, pissa, olora (pissa and olora are saved as a "
        "plain LoRA for the untouched base); pissa_niter_4: PiSSA by a fast randomized SVD (seconds, not minutes).",
        CARD,
    )
    lora_modules_to_save: list[str] | None = option(
        None, "Modules trained in full and saved with the adapter, e.g. [lm_head, embed_tokens] for new tokens.", CARD
    )
    load_in_4bit: bool = option(
        False,
        "QLoRA: the frozen base in 4 bits (bitsandbytes NF4, double quantisation, bf16 compute); CUDA only.",
        CARD,
    )
    attn_implementation: Annotated[str, AfterValidator(_attention)] = option(
        "sdpa",
        "Attention kernel: sdpa, eager, flash_attention_2 (pip install flash-attn), flash_attention_3, or a hub "
        "kernel (org/repo, pip install kernels). With packing, flash attention runs each example apart "
        "(varlen) where sdpa builds a batch x length x length mask.",
    )
    device: Annotated[str, one_of(DEVICES)] = option(
        "auto",
        "auto: the GPUs when torch can use them, else the CPU; cpu: the CPU even with GPUs; cuda: GPUs or stop. "
        "A GPU torch cannot use (an old driver, a CPU-only build) stops with auto too, rather than train on the CPU.",
    )
    cuda_visible_devices: str | None = option(
        None, 'GPUs to use, e.g. "0,1" (null: leave CUDA_VISIBLE_DEVICES as it is).', RESUMABLE
    )
    num_processes: int | None = option(
        None,
        "Training processes on this machine, one per GPU; null: one per visible GPU (1 without GPUs). Several "
        "are launched with torchrun (DDP), or accelerate with accelerate_config. 1 with several GPUs: the first.",
        ge=1,
    )
    cpu_threads: int | None = option(
        None,
        "torch threads on the CPU; null: OMP_NUM_THREADS where set, else the CPUs this process may use (its "
        "affinity and cgroup quota) divided among the processes. Threads beyond the free cores spin.",
        RESUMABLE,
        ge=1,
    )
    accelerate_config: str | None = option(
        None,
        "With num_processes>1: launch with `accelerate launch` and this config: ddp, fsdp, deepspeed_zero2, "
        "deepspeed_zero3 (shipped with loraops) or a file of yours.",
    )
    seed: int = option(42, "Random seed for initialisation, shuffling and dropout.", CARD, ge=0, le=MAX_SEED)
    logging_steps: int = option(5, "Log loss, learning rate and grad norm every this many steps.", RESUMABLE, ge=1)
    save_strategy: Annotated[str, one_of(STRATEGIES)] = option(
        "epoch",
        "When to checkpoint for resuming: epoch, steps (every save_steps) or no. "
        "With validation, checkpoints follow eval_strategy instead (the best one must be kept).",
        RESUMABLE,
    )
    save_steps: int = option(100, "Checkpoint interval in optimizer steps, with save_strategy=steps.", RESUMABLE, ge=1)
    val_path: str | None = option(
        "auto",
        "Validation file (any training format): auto = <dataset_path>/eval/dev.jsonl when it exists; "
        "null: none. Validation records never train.",
    )
    val_fraction: float = option(
        0.0,
        "Share of the training records held out for validation instead of val_path, chosen by a hash of "
        "each record (the same records on every run and on resume).",
        ge=0,
        lt=1,
    )
    eval_strategy: Annotated[str, one_of(STRATEGIES)] = option(
        "epoch", "When to validate: epoch, steps (every eval_steps) or no."
    )
    eval_steps: int = option(50, "Validation interval in optimizer steps, with eval_strategy=steps.", ge=1)
    val_metrics: Annotated[list[str], _all_in(METRICS)] = option(
        ["exact_match"], "Generation metrics computed on the validation split at each validation ([]: loss only)."
    )
    val_limit: int | None = option(32, "Generate for at most this many validation examples (the loss uses all).", ge=1)
    val_max_new_tokens: int = option(64, "Token limit of each validation answer.", ge=1)
    select_metric: Annotated[str, one_of(("loss", *METRICS, *REWARD_METRICS))] = option(
        "loss",
        "Validation metric that picks the adapter kept in model/: loss (lowest wins), a generation "
        "metric such as exact_match, or, for preference methods, reward_accuracy (dpo, orpo: the share of pairs "
        "whose chosen answer the model prefers) or reward_margin (highest wins).",
    )
    early_stopping_patience: int | None = option(
        None,
        "Stop after this many validations in a row without select_metric improving (null: never stop early).",
        ge=1,
    )
    early_stopping_min_delta: float = option(
        0.0, "Smallest change of select_metric that counts as an improvement.", ge=0
    )
    resume_from: str | None = option(
        None,
        "An unfinished run folder to continue from its last checkpoint (same config and data required).",
        RESUMABLE,
    )
    output_dir: str = option(paths.RUNS_DIR, "Where run folders (and the `latest` link) are created.", RESUMABLE)
    tracking: Tracking = _tracking_field()
    mlflow_experiment: Experiment = _experiment_field()
    remote: RemoteConfig = _remote_section()

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TrainConfig:
        if self.eval_strategy == "no":
            for key, default in (("early_stopping_patience", None), ("select_metric", "loss")):
                if getattr(self, key) != default:
                    raise ConfigError(f"{key}={getattr(self, key)!r} needs validation, but eval_strategy is no")
        _check_mlflow(self.tracking, info)
        _check_method(self)
        return self

    @property
    def generation_metrics(self) -> list[str]:
        """The generation metrics each validation computes: val_metrics and a generation select_metric."""
        chosen = [*self.val_metrics, *([self.select_metric] if self.select_metric in METRICS else [])]
        return list(dict.fromkeys(chosen))


# Keys that only some methods read, with their defaults: set for another method, they are refused, not ignored.
_METHOD_KEYS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "beta": (None, PREFERENCE_METHODS),
    "loss_type": (None, ("dpo", "kto")),
    "label_smoothing": (0.0, ("dpo",)),
    "max_prompt_length": (None, PREFERENCE_METHODS),
    "desirable_weight": (1.0, ("kto",)),
    "undesirable_weight": (1.0, ("kto",)),
    "preference": ("refuse", ("sft",)),
    "packing": (False, ("sft",)),
}


def _check_method(cfg: TrainConfig) -> None:
    for key, (default, methods) in _METHOD_KEYS.items():
        if getattr(cfg, key) != default and cfg.method not in methods:
            raise ConfigError(
                f"{key}={getattr(cfg, key)!r} is read by method={'/'.join(methods)} only, and this run's method "
                f"is {cfg.method}: remove it, or set method={methods[0]}"
            )
    losses = {"dpo": DPO_LOSSES, "kto": KTO_LOSSES}.get(cfg.method, ())
    if cfg.loss_type is not None and cfg.loss_type not in losses:
        raise ConfigError(f"loss_type={cfg.loss_type!r}: method={cfg.method} takes one of {', '.join(losses)}")
    if cfg.select_metric in REWARD_METRICS and cfg.method == "sft":
        raise ConfigError(f"select_metric={cfg.select_metric} is measured by preference methods (method=dpo/orpo/kto)")
    if cfg.select_metric == "reward_accuracy" and cfg.method == "kto":
        raise ConfigError(
            "select_metric=reward_accuracy needs pairs, and kto scores single answers: use select_metric=reward_margin"
        )
    if cfg.method != "sft" and cfg.reasoning == "mask":
        raise ConfigError(
            "reasoning=mask leaves a gap inside each answer, and preference methods score whole answers: "
            "use reasoning=train or reasoning=drop"
        )


class EvalConfig(Schema):
    model: str = option(paths.LATEST_RUN, "Run folder (or its `latest` link) or adapter folder to evaluate.")
    baseline: bool = option(False, "Evaluate the untouched base model instead of the adapter.")
    model_name: str | None = option(
        None, "Base model (as in train's model_name); null: the one the run was trained on."
    )
    eval_dir: str = option("data/eval", "Folder of eval splits, one file per split.", RECORDED)
    eval_pattern: Glob = option("*", "Glob selecting the split files in eval_dir (.jsonl, .json, .parquet, .csv).")
    data_format: DataFormat = option(
        "auto", "Record format of the split files, as in train (auto: detected per record)."
    )
    columns: Columns = option(None, "Field mapping of the split files, as in train's `columns`.")
    system_prompt: str | None = option(None, "System turn for prompts without one; use the one the run trained with.")
    prompt_completion: PromptCompletion = _prompt_completion_field()
    splits: list[str] | None = option(None, "Only these splits (file stems); null: every file.")
    limit: int | None = option(None, "Evaluate at most this many examples per split (null: all).", RECORDED, ge=1)
    batch_size: int = option(32, "Prompts generated together.", RECORDED, ge=1)
    max_new_tokens: int = option(64, "Generation stops here if no EOS came first.", RECORDED, ge=1)
    split_max_new_tokens: dict[str, Annotated[int, Field(ge=1)]] | None = option(
        None, "max_new_tokens for some splits, e.g. {gsm8k: 384} for worked solutions.", RECORDED
    )
    do_sample: bool = option(False, "Sample instead of greedy decoding.", RECORDED)
    temperature: float = option(1.0, "Sampling temperature (only with do_sample).", RECORDED, ge=MIN_TEMPERATURE)
    top_p: float = option(1.0, "Nucleus sampling threshold (only with do_sample).", RECORDED, gt=0, le=1)
    merge_adapter: bool = option(
        True, "Merge LoRA weights into the base before generating (faster, same results).", RECORDED
    )
    load_in_4bit: bool | None = option(
        None, "Generate on a 4-bit base (QLoRA; CUDA only, never merged); null: as the run trained."
    )
    bf16: bool = option(True, "Generate in bf16 on GPUs that support it; always fp32 on CPU.", RECORDED)
    device: Annotated[str, one_of(DEVICES)] = option(
        "auto", "auto: a GPU when torch can use one, else the CPU; cpu: the CPU even with GPUs; cuda: a GPU or stop."
    )
    cuda_visible_devices: str | None = option(None, "GPUs to use (null: leave CUDA_VISIBLE_DEVICES alone).")
    seed: int = option(42, "Seed for sampling.", RECORDED, ge=0, le=MAX_SEED)
    metrics_dir: str = option(paths.METRICS_DIR, "Where metrics and predictions are written, one folder per model.")
    tracking: Tracking = _tracking_field()
    mlflow_experiment: Experiment = _experiment_field()
    remote: RemoteConfig = _remote_section()

    @model_validator(mode="after")
    def _tracker_installed(self, info: ValidationInfo) -> EvalConfig:
        _check_mlflow(self.tracking, info)
        return self


class GuardConfig(Schema):
    split: str = option("test", "Split the guard watches.")
    metric: Annotated[str, one_of(SCORED)] = option("exact_match", "Metric it watches.")
    max_drop: float = option(5.0, "Largest drop allowed, in the metric's own scale (exact_match: points of %).", ge=0)


# Every shipped split is guarded: a significant drop beyond max_drop on any of them refuses the run.
DEFAULT_GUARDS = [
    {"split": "test", "metric": "exact_match", "max_drop": 5.0},
    {"split": "dev", "metric": "exact_match", "max_drop": 5.0},
    {"split": "adversarial", "metric": "exact_match", "max_drop": 5.0},
    {"split": "canary", "metric": "jaccard", "max_drop": 0.1},
]


class CompareConfig(Schema):
    run: str = option(paths.LATEST_RUN, "The fine-tuned run to judge.")
    against: Annotated[str, one_of(COMPARE_AGAINST)] = option(
        "auto", "Reference: auto (last published run, else the base model), base, or published."
    )
    primary_metric: Annotated[str, one_of(SCORED)] = option(
        "exact_match",
        "Metric that decides whether fine-tuning helped: a generation metric, or preference_accuracy on a "
        "split of preference pairs (the share whose chosen answer the model finds likelier).",
    )
    primary_split: str = option("test", "Split that decides whether fine-tuning helped.")
    min_delta: float = option(0.0, "The primary metric must rise by more than this.", ge=0)
    alpha: float = option(
        0.05,
        "Significance level: IMPROVED needs p < alpha and the interval's low end above min_delta.",
        gt=0,
        lt=1,
    )
    bootstrap_resamples: int = option(2000, "Paired bootstrap resamples for the intervals.", ge=100)
    seed: int = option(
        42, "Seed of the bootstrap, so the same metrics always give the same verdict.", ge=0, le=MAX_SEED
    )
    guards: list[GuardConfig] = Field(
        default_factory=lambda: [GuardConfig.model_validate(g) for g in DEFAULT_GUARDS],
        description="Splits that must not drop significantly by more than max_drop (split, metric, max_drop).",
    )
    show_flips: int = option(
        3, "Fixed and broken examples printed per split (all of them are in comparison.json).", ge=0
    )
    verify_samples: int = option(
        16,
        "publish regenerates this many primary-split examples from the files it is about to publish (0: skip).",
        ge=0,
    )
    export_min_agreement: float = option(
        0.9,
        "export: share of evaluated answers an exported file must reproduce exactly (llama.cpp, greedy) before "
        "it is kept; quantised files are measured and reported, not held to it.",
        ge=0,
        le=1,
    )
    max_overlap: float = option(
        0.0,
        "Share of a split's examples that may also be in the training data (exact or near) before publish refuses.",
        ge=0,
        le=1,
    )
    artifacts_dir: str = option(
        paths.ARTIFACTS_DIR, "Folder of metrics, published models, reports and the reference record."
    )
    metrics_dir: str | None = option(None, "Where `loraops eval` wrote metrics; null: <artifacts_dir>/metrics.")
    reference_file: str | None = option(
        None, "Record of the published reference run (written by publish); null: <artifacts_dir>/reference.json."
    )
    tracking: Tracking = _tracking_field()
    mlflow_experiment: Experiment = _experiment_field()
    registered_model: str | None = option(
        None,
        "MLflow registered model that publish adds versions to (alias `champion`: the published reference); "
        "null: loraops-<base model name>.",
    )

    @model_validator(mode="after")
    def _derived_folders(self, info: ValidationInfo) -> CompareConfig:
        # Derived here, so one artifacts_dir override moves metrics, reference and models together.
        self.metrics_dir = self.metrics_dir or str(paths.metrics_dir(self.artifacts_dir))
        self.reference_file = self.reference_file or str(paths.reference_file(self.artifacts_dir))
        _check_mlflow(self.tracking, info)
        return self

    @property
    def metrics_folder(self) -> Path:
        return Path(self.metrics_dir or paths.metrics_dir(self.artifacts_dir))

    @property
    def reference_path(self) -> Path:
        return Path(self.reference_file or paths.reference_file(self.artifacts_dir))

    @property
    def published_dir(self) -> Path:
        """Where `loraops publish` puts published runs."""
        return paths.published_dir(self.artifacts_dir)

    @property
    def exports_dir(self) -> Path:
        """Where `loraops export` puts exported runs."""
        return paths.exports_dir(self.artifacts_dir)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def schema_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts, nested sections included."""
    keys: list[str] = []
    for name, info in schema.model_fields.items():
        keys.append(prefix + name)
        if _is_section(info.annotation):
            keys.extend(schema_keys(info.annotation, f"{prefix}{name}."))  # type: ignore[arg-type]
    return keys


def help_rows(schema: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every leaf key: for --help and the README."""
    rows: list[tuple[str, Any, str]] = []
    for name, info in schema.model_fields.items():
        if _is_section(info.annotation):
            rows.extend(help_rows(info.annotation, f"{prefix}{name}."))  # type: ignore[arg-type]
            continue
        default = info.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = [item.model_dump() if isinstance(item, BaseModel) else item for item in default]
        rows.append((prefix + name, default, info.description or ""))
    return rows


def marked(schema: type[BaseModel], marker: str) -> list[str]:
    """The top-level keys of `schema` that carry `marker` (RESUMABLE, RECORDED, CARD)."""
    return [
        name
        for name, info in schema.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(marker)
    ]

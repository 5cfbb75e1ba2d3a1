"""Typed training configuration: the schema, Hydra composition and validation.

Each field's `help` is the single source for `--help`, the README reference and errors.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from loraops.data.formats import COLUMN_TARGETS, PREFERENCE_USES
from loraops.data.formats import FORMATS as DATA_FORMATS
from loraops.errors import ConfigError

DATA_SOURCE_TYPES = ("local", "lakefs", "hub")
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
SAVE_STRATEGIES = ("epoch", "steps", "no")
EVAL_STRATEGIES = SAVE_STRATEGIES
LORA_INITS = ("default", "gaussian", "pissa", "olora")
# Scores of `loraops eval`, each the mean of a per-example score of the same name (BLEU: corpus BLEU).
METRICS = ("exact_match", "jaccard", "rouge1", "rouge2", "rougeL", "bleu")
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Where runs, evaluations, verdicts and publications are tracked (loraops.tracking).
TRACKING_MODES = ("tensorboard", "mlflow", "both")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataSourceConfig:
    type: str = _f("local", "Where data files come from: `local` (under dataset_path), `lakefs` or `hub`.")
    repository: Optional[str] = _f(None, "lakeFS repository (type: lakefs).")
    ref: str = _f("main", "lakeFS branch, tag or commit id; resolved to a commit id recorded in the manifest.")
    path: str = _f("", "lakeFS path prefix; dataset_pattern is matched below it (its eval/ folder is skipped).")
    repo_id: Optional[str] = _f(None, "Hugging Face Hub dataset, e.g. `databricks/databricks-dolly-15k` (type: hub).")
    split: str = _f("train", "Hub dataset split (type: hub).")
    revision: Optional[str] = _f(None, "Hub branch, tag or commit (null: main); resolved to a commit in the manifest.")
    subset: Optional[str] = _f(None, "Hub dataset subset (configuration name), where it has several.")


@dataclass
class RemoteConfig:
    """`loraops remote` settings; REMOTE_* variables (environment, then .env) override each key."""

    host: Optional[str] = _f(None, "SSH host of the GPU server (REMOTE_HOST).")
    user: Optional[str] = _f(None, "SSH user (REMOTE_USER); null: ssh's default.")
    dir: str = _f("loraops", "Project folder on the server, relative to the home folder (REMOTE_DIR).")
    port: Optional[int] = _f(None, "SSH port (REMOTE_PORT); null: ssh's default.")
    ssh_key: Optional[str] = _f(None, "Private key file (REMOTE_SSH_KEY); null: ssh's default keys.")
    ssh_options: str = _f("", 'Extra ssh options in one string, e.g. "-o ProxyJump=bastion" (REMOTE_SSH_OPTS).')
    python: str = _f("python3", "The server's Python that creates its .venv (REMOTE_PYTHON).")
    packages_from: Optional[str] = _f(
        None, "A server Python whose installed packages (e.g. a CUDA torch) the .venv reuses (REMOTE_PACKAGES_FROM)."
    )
    cuda_visible_devices: Optional[str] = _f(None, "GPUs the remote job may use (CUDA_VISIBLE_DEVICES there).")
    hf_home: Optional[str] = _f(None, "The server's Hugging Face cache folder (HF_HOME there).")
    push_gitignored: bool = _f(
        False, "Push files that .gitignore ignores too (REMOTE_PUSH_GITIGNORED); .env files are never pushed."
    )


def _remote_section() -> Any:
    return field(default_factory=RemoteConfig, metadata={"help": "Settings of `loraops remote` (SSH server)."})


def _tracking_field() -> Any:
    return _f(
        "tensorboard",
        "Experiment tracking: tensorboard (event files in the run's logs/), mlflow (MLFLOW_TRACKING_URI, "
        "else the embedded store mlruns/mlflow.db), or both.",
    )


def _experiment_field() -> Any:
    return _f("loraops", "MLflow experiment that runs and evaluations are logged under (with tracking mlflow or both).")


def _tracking_checks(cfg: Any) -> list[tuple[bool, str, str]]:
    return [
        (cfg.tracking in TRACKING_MODES, "tracking", f"must be one of {', '.join(TRACKING_MODES)}"),
        (
            cfg.tracking == "tensorboard" or _installed("mlflow"),
            "tracking",
            "needs MLflow, which is not installed: pip install 'loraops[mlflow]'",
        ),
        (bool(cfg.mlflow_experiment.strip()), "mlflow_experiment", "must name an experiment"),
    ]


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules, i.e. blocked
        return False


@dataclass
class TrainConfig:
    model_name: str = _f(
        "default",
        "Base model: `default` (embedded SmolLM2-135M-Instruct), a local HF folder, a .gguf file, or a hub id.",
    )
    dataset_path: str = _f("data", "Folder holding the training files (its eval/ subfolder is never training data).")
    dataset_pattern: str = _f(
        "*", "Glob, relative to dataset_path, selecting the training files (.jsonl, .json, .parquet, .csv)."
    )
    data_format: str = _f(
        "auto", "Record format: auto (detected per record) or one of: " + ", ".join(DATA_FORMATS[1:]) + "."
    )
    columns: Optional[dict[str, str]] = _f(
        None,
        "Your fields onto loraops' names, e.g. {prompt: question, completion: answer} or "
        "{instruction: instruction, input: context, output: response}; also for the validation file.",
    )
    system_prompt: Optional[str] = _f(None, "System turn added to conversations that have none.")
    skip_non_text: bool = _f(
        False, "Drop (and count) records with images, audio or other non-text parts instead of refusing them."
    )
    preference: str = _f(
        "refuse", "Preference data (chosen/rejected, KTO labels): refuse, or chosen (train on the preferred answers)."
    )
    dedup: bool = _f(False, "Drop records that repeat an earlier one (whitespace aside) before training; counted.")
    data_source: DataSourceConfig = field(
        default_factory=DataSourceConfig, metadata={"help": "Where the data comes from."}
    )
    epochs: int = _f(3, "Passes over the training data.")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run all epochs). Handy for smoke tests.")
    batch_size: int = _f(8, "Examples per device per step.")
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients add up before one optimizer update.")
    lr: float = _f(5e-4, "Peak learning rate.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule (transformers' SchedulerType names).")
    warmup_ratio: float = _f(0.05, "Share of the optimizer steps spent warming the learning rate up, in [0, 1).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_length: int = _f(256, "Token limit per example; longer examples are truncated and counted.")
    bf16: bool = _f(True, "Train in bf16 where the GPU supports it (fp16 on older GPUs; always fp32 on CPU).")
    packing: bool = _f(
        False,
        "Fill rows of max_length with several examples, each attending only to itself; batch_size then "
        "counts rows. Pays off when examples are much shorter than max_length (see make bench-train).",
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass: less memory, ~30% slower.")
    labelled_logits_only: bool = _f(
        True, "Apply the LM head and the loss only where a label is trained: the same loss and gradients, less work."
    )
    liger_kernel: bool = _f(
        False,
        "CUDA: Liger's Triton kernels (RMSNorm, SwiGLU, RoPE, and a fused linear cross-entropy that never "
        "materialises the logits); pip install liger-kernel. Takes over from labelled_logits_only.",
    )
    torch_compile: bool = _f(False, "Compile the model with torch.compile (measured slower on CPU: make bench-train).")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = _f(
        0.0,
        "Dropout on the LoRA path, in [0, 1). 0 by default: on the sample data 0.05 cost ~26% of the step "
        "time and gained nothing (README, Performance).",
    )
    lora_target_modules: list[str] = _f(list(ALL_PROJECTIONS), "Module names that get LoRA adapters.")
    use_dora: bool = _f(False, "DoRA: LoRA on the direction, with a trained magnitude per output (PEFT use_dora).")
    use_rslora: bool = _f(False, "rsLoRA: scale by alpha/sqrt(r) instead of alpha/r, stabler at high rank.")
    lora_init: str = _f(
        "default",
        "LoRA initialisation: default (B=0), gaussian, pissa, olora (pissa and olora are saved as a "
        "plain LoRA for the untouched base).",
    )
    lora_modules_to_save: Optional[list[str]] = _f(
        None, "Modules trained in full and saved with the adapter, e.g. [lm_head, embed_tokens] for new tokens."
    )
    load_in_4bit: bool = _f(
        False, "QLoRA: the frozen base in 4 bits (bitsandbytes NF4, double quantisation, bf16 compute); CUDA only."
    )
    cuda_visible_devices: Optional[str] = _f(
        None, 'GPUs to use, e.g. "0,1" (null: leave CUDA_VISIBLE_DEVICES as it is).'
    )
    num_processes: int = _f(
        1, "Training processes on this machine (one per GPU): >1 launches them with torchrun (DDP)."
    )
    accelerate_config: Optional[str] = _f(
        None,
        "With num_processes>1: launch with `accelerate launch` and this config: ddp, fsdp, deepspeed_zero2, "
        "deepspeed_zero3 (configs/accelerate/) or a file of yours.",
    )
    seed: int = _f(42, "Random seed for initialisation, shuffling and dropout.")
    logging_steps: int = _f(5, "Log loss, learning rate and grad norm every this many steps.")
    save_strategy: str = _f(
        "epoch",
        "When to checkpoint for resuming: epoch, steps (every save_steps) or no. "
        "With validation, checkpoints follow eval_strategy instead (the best one must be kept).",
    )
    save_steps: int = _f(100, "Checkpoint interval in optimizer steps, with save_strategy=steps.")
    val_path: Optional[str] = _f(
        "auto",
        "Validation file (any training format): auto = <dataset_path>/eval/dev.jsonl when it exists; "
        "null: none. Validation records never train.",
    )
    val_fraction: float = _f(
        0.0,
        "Share of the training records held out for validation instead of val_path, chosen by a hash of "
        "each record (the same records on every run and on resume).",
    )
    eval_strategy: str = _f("epoch", "When to validate: epoch, steps (every eval_steps) or no.")
    eval_steps: int = _f(50, "Validation interval in optimizer steps, with eval_strategy=steps.")
    val_metrics: list[str] = _f(
        ["exact_match"], "Generation metrics computed on the validation split at each validation ([]: loss only)."
    )
    val_limit: Optional[int] = _f(32, "Generate for at most this many validation examples (the loss uses all).")
    val_max_new_tokens: int = _f(64, "Token limit of each validation answer.")
    select_metric: str = _f(
        "loss",
        "Validation metric that picks the adapter kept in model/: loss (lowest wins) or a generation "
        "metric such as exact_match (highest wins).",
    )
    early_stopping_patience: Optional[int] = _f(
        None, "Stop after this many validations in a row without select_metric improving (null: never stop early)."
    )
    early_stopping_min_delta: float = _f(0.0, "Smallest change of select_metric that counts as an improvement.")
    resume_from: Optional[str] = _f(
        None, "An unfinished run folder to continue from its last checkpoint (same config and data required)."
    )
    output_dir: str = _f("outputs/runs", "Where run folders (and the `latest` link) are created.")
    tracking: str = _tracking_field()
    mlflow_experiment: str = _experiment_field()
    remote: RemoteConfig = _remote_section()

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "must be at least 1"),
            (self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 or at least 1"),
            (self.batch_size >= 1, "batch_size", "must be at least 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1"),
            (self.lr > 0, "lr", "must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.max_length >= 8, "max_length", "must be at least 8"),
            (self.lora_r >= 1, "lora_r", "must be at least 1"),
            (self.lora_alpha > 0, "lora_alpha", "must be positive"),
            (0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)"),
            (len(self.lora_target_modules) > 0, "lora_target_modules", "must name at least one module"),
            (self.lora_init in LORA_INITS, "lora_init", f"must be one of {', '.join(LORA_INITS)}"),
            (self.logging_steps >= 1, "logging_steps", "must be at least 1"),
            (self.num_processes >= 1, "num_processes", "must be at least 1"),
            (self.save_strategy in SAVE_STRATEGIES, "save_strategy", f"must be one of {', '.join(SAVE_STRATEGIES)}"),
            (self.save_steps >= 1, "save_steps", "must be at least 1"),
            (self.data_format in DATA_FORMATS, "data_format", f"must be one of {', '.join(DATA_FORMATS)}"),
            (self.preference in PREFERENCE_USES, "preference", f"must be one of {', '.join(PREFERENCE_USES)}"),
            (_known_columns(self.columns), "columns", _COLUMNS_PROBLEM),
            (self.lr_scheduler_type in SCHEDULERS, "lr_scheduler_type", f"must be one of {', '.join(SCHEDULERS)}"),
            (
                self.data_source.type in DATA_SOURCE_TYPES,
                "data_source.type",
                f"must be one of {', '.join(DATA_SOURCE_TYPES)}",
            ),
            (
                self.data_source.type != "lakefs" or bool(self.data_source.repository),
                "data_source.repository",
                "must name the lakeFS repository when data_source.type is lakefs",
            ),
            (
                self.data_source.type != "hub" or bool(self.data_source.repo_id),
                "data_source.repo_id",
                "must name the Hub dataset when data_source.type is hub",
            ),
            (_relative_glob(self.dataset_pattern), "dataset_pattern", _GLOB_PROBLEM),
            *self._validation_checks(),
            *_tracking_checks(self),
        ]
        _raise_first(self, checks)

    def _validation_checks(self) -> list[tuple[bool, str, str]]:
        selectable = ("loss", *METRICS)
        return [
            (self.eval_strategy in EVAL_STRATEGIES, "eval_strategy", f"must be one of {', '.join(EVAL_STRATEGIES)}"),
            (self.eval_steps >= 1, "eval_steps", "must be at least 1"),
            (0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)"),
            (all(m in METRICS for m in self.val_metrics), "val_metrics", f"must be among {', '.join(METRICS)}"),
            (self.val_limit is None or self.val_limit >= 1, "val_limit", "must be null or at least 1"),
            (self.val_max_new_tokens >= 1, "val_max_new_tokens", "must be at least 1"),
            (self.select_metric in selectable, "select_metric", f"must be one of {', '.join(selectable)}"),
            (
                self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                "early_stopping_patience",
                "must be null or at least 1",
            ),
            (self.early_stopping_min_delta >= 0, "early_stopping_min_delta", "must be >= 0"),
            (
                self.eval_strategy != "no" or self.early_stopping_patience is None,
                "early_stopping_patience",
                "needs validation, but eval_strategy is no",
            ),
            (
                self.eval_strategy != "no" or self.select_metric == "loss",
                "select_metric",
                "needs validation, but eval_strategy is no",
            ),
        ]

    @property
    def generation_metrics(self) -> list[str]:
        """The generation metrics each validation computes: val_metrics and a generation select_metric."""
        chosen = [*self.val_metrics, *([self.select_metric] if self.select_metric in METRICS else [])]
        return list(dict.fromkeys(chosen))


@dataclass
class EvalConfig:
    model: str = _f("outputs/runs/latest", "Run folder (or its `latest` link) or adapter folder to evaluate.")
    baseline: bool = _f(False, "Evaluate the untouched base model instead of the adapter.")
    model_name: Optional[str] = _f(None, "Base model (as in train's model_name); null: the one the run was trained on.")
    eval_dir: str = _f("data/eval", "Folder of eval splits, one JSONL file per split.")
    eval_pattern: str = _f("*", "Glob selecting the split files in eval_dir (.jsonl, .json, .parquet, .csv).")
    data_format: str = _f("auto", "Record format of the split files, as in train (auto: detected per record).")
    columns: Optional[dict[str, str]] = _f(None, "Field mapping of the split files, as in train's `columns`.")
    system_prompt: Optional[str] = _f(None, "System turn for prompts without one; use the one the run trained with.")
    splits: Optional[list[str]] = _f(None, "Only these splits (file stems); null: every file.")
    limit: Optional[int] = _f(None, "Evaluate at most this many examples per split (null: all).")
    batch_size: int = _f(32, "Prompts generated together.")
    max_new_tokens: int = _f(64, "Generation stops here if no EOS came first.")
    do_sample: bool = _f(False, "Sample instead of greedy decoding.")
    temperature: float = _f(1.0, "Sampling temperature (only with do_sample).")
    top_p: float = _f(1.0, "Nucleus sampling threshold (only with do_sample).")
    merge_adapter: bool = _f(True, "Merge LoRA weights into the base before generating (faster, same results).")
    load_in_4bit: Optional[bool] = _f(
        None, "Generate on a 4-bit base (QLoRA; CUDA only, never merged); null: as the run trained."
    )
    bf16: bool = _f(True, "Generate in bf16 on GPUs that support it; always fp32 on CPU.")
    cuda_visible_devices: Optional[str] = _f(None, "GPUs to use (null: leave CUDA_VISIBLE_DEVICES alone).")
    seed: int = _f(42, "Seed for sampling.")
    output_dir: str = _f("artifacts/metrics", "Where metrics and predictions are written.")
    tracking: str = _tracking_field()
    mlflow_experiment: str = _experiment_field()
    remote: RemoteConfig = _remote_section()

    def validate(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch_size", "must be at least 1"),
            (self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1"),
            (self.limit is None or self.limit >= 1, "limit", "must be null or at least 1"),
            (self.temperature > 0, "temperature", "must be positive"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (_relative_glob(self.eval_pattern), "eval_pattern", _GLOB_PROBLEM),
            (self.data_format in DATA_FORMATS, "data_format", f"must be one of {', '.join(DATA_FORMATS)}"),
            (_known_columns(self.columns), "columns", _COLUMNS_PROBLEM),
            *_tracking_checks(self),
        ]
        _raise_first(self, checks)


COMPARE_AGAINST = ("auto", "base", "published")


@dataclass
class GuardConfig:
    split: str = _f("test", "Split the guard watches.")
    metric: str = _f("exact_match", "Metric it watches.")
    max_drop: float = _f(5.0, "Largest drop allowed, in the metric's own scale (exact_match: points of %).")


# Every shipped split is guarded: a significant drop beyond max_drop on any of them refuses the run.
DEFAULT_GUARDS = [
    GuardConfig("test", "exact_match", 5.0),
    GuardConfig("dev", "exact_match", 5.0),
    GuardConfig("adversarial", "exact_match", 5.0),
    GuardConfig("canary", "jaccard", 0.1),
]


@dataclass
class CompareConfig:
    run: str = _f("outputs/runs/latest", "The fine-tuned run to judge.")
    against: str = _f("auto", "Reference: auto (last published run, else the base model), base, or published.")
    primary_metric: str = _f("exact_match", "Metric that decides whether fine-tuning helped.")
    primary_split: str = _f("test", "Split that decides whether fine-tuning helped.")
    min_delta: float = _f(0.0, "The primary metric must rise by more than this.")
    alpha: float = _f(0.05, "Significance level: IMPROVED needs p < alpha and the interval's low end above min_delta.")
    bootstrap_resamples: int = _f(2000, "Paired bootstrap resamples for the intervals.")
    seed: int = _f(42, "Seed of the bootstrap, so the same metrics always give the same verdict.")
    guards: list[GuardConfig] = _f(
        list(DEFAULT_GUARDS), "Splits that must not drop significantly by more than max_drop (split, metric, max_drop)."
    )
    show_flips: int = _f(3, "Fixed and broken examples printed per split (all of them are in comparison.json).")
    verify_samples: int = _f(
        16, "publish regenerates this many primary-split examples from the files it is about to publish (0: skip)."
    )
    max_overlap: float = _f(
        0.0, "Share of a split's examples that may also be in the training data (exact or near) before publish refuses."
    )
    artifacts_dir: str = _f("artifacts", "Folder of metrics, published models and the reference record.")
    metrics_dir: Optional[str] = _f(None, "Where `loraops eval` wrote metrics; null: <artifacts_dir>/metrics.")
    reference_file: Optional[str] = _f(
        None, "Record of the published reference run (written by publish); null: <artifacts_dir>/reference.json."
    )
    tracking: str = _tracking_field()
    mlflow_experiment: str = _experiment_field()
    registered_model: Optional[str] = _f(
        None,
        "MLflow registered model that publish adds versions to (alias `champion`: the published reference); "
        "null: loraops-<base model name>.",
    )

    def __post_init__(self) -> None:
        # Derived here, so one artifacts_dir override moves metrics, reference and models together.
        self.metrics_dir = self.metrics_dir or str(Path(self.artifacts_dir) / "metrics")
        self.reference_file = self.reference_file or str(Path(self.artifacts_dir) / "reference.json")

    @property
    def models_dir(self) -> Path:
        """Where `loraops publish` puts published models."""
        return Path(self.artifacts_dir) / "models"

    def validate(self) -> None:
        checks = [
            (self.against in COMPARE_AGAINST, "against", f"must be one of {', '.join(COMPARE_AGAINST)}"),
            (self.primary_metric in METRICS, "primary_metric", f"must be one of {', '.join(METRICS)}"),
            (self.min_delta >= 0, "min_delta", "must be >= 0"),
            (0 < self.alpha < 1, "alpha", "must be in (0, 1)"),
            (self.bootstrap_resamples >= 100, "bootstrap_resamples", "must be at least 100"),
            (self.show_flips >= 0, "show_flips", "must be >= 0"),
            (self.verify_samples >= 0, "verify_samples", "must be >= 0"),
            (0 <= self.max_overlap <= 1, "max_overlap", "must be in [0, 1]"),
            (all(g.metric in METRICS for g in self.guards), "guards", f"metrics must be among {', '.join(METRICS)}"),
            (all(g.max_drop >= 0 for g in self.guards), "guards", "max_drop must be >= 0"),
            *_tracking_checks(self),
        ]
        _raise_first(self, checks)


_GLOB_PROBLEM = "must be a non-empty glob relative to its folder, e.g. *.jsonl"


_COLUMNS_PROBLEM = f"must map some of {', '.join(COLUMN_TARGETS)} to your field names, e.g. {{prompt: question}}"


def _known_columns(columns: dict[str, str] | None) -> bool:
    return not columns or all(k in COLUMN_TARGETS and isinstance(v, str) and v for k, v in columns.items())


def _relative_glob(pattern: str) -> bool:
    return bool(pattern.strip()) and not Path(pattern).is_absolute() and ".." not in Path(pattern).parts


def _non_finite(cfg: Any, prefix: str = "") -> str | None:
    """The first float key holding inf or nan: comparisons with them pass checks they should fail."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            found = _non_finite(value, f"{prefix}{f.name}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{f.name}"
    return None


def _raise_first(cfg: Any, checks: list[tuple[bool, str, str]]) -> None:
    bad = _non_finite(cfg)
    if bad:
        raise ConfigError(f"{bad}={getattr_dotted(cfg, bad)!r} must be a finite number")
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key}={getattr_dotted(cfg, key)!r} {problem}")


def getattr_dotted(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts, nested sections included."""
    keys: list[str] = []
    for f in fields(schema):
        name = prefix + f.name
        keys.append(name)
        if is_dataclass(f.default_factory):  # a nested section such as data_source
            keys.extend(schema_keys(f.default_factory, name + "."))  # type: ignore[arg-type]
    return keys


def help_rows(schema: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every leaf key: for --help and the README."""
    rows: list[tuple[str, Any, str]] = []
    defaults = schema()
    for f in fields(schema):
        value = getattr(defaults, f.name)
        if is_dataclass(value):
            rows.extend(help_rows(type(value), prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, value, f.metadata.get("help", "")))
    return rows


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key `{key}` ({where}){hint}")


def _check_keys(cfg: dict[Any, Any], valid: list[str], where: str, prefix: str = "") -> None:
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if dotted not in valid:
            raise _unknown_key_error(dotted, valid, where)
        if isinstance(value, dict) and any(k.startswith(dotted + ".") for k in valid):  # a section, not a mapping value
            _check_keys(value, valid, where, dotted + ".")


def _parse_overrides(overrides: list[str], valid: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse override: {exc}") from exc
    for override in parsed:
        key = override.key_or_group
        if key not in valid:
            raise _unknown_key_error(key, valid, "command-line override")


def compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose `config_dir/config_name.yaml` with Hydra and apply `key=value` overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    config_dir = config_dir.resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        available = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml"))) or "none"
        raise ConfigError(f"no config {config_dir / (config_name + '.yaml')} (available: {available})")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            return hydra_compose(config_name=config_name, overrides=overrides)
    except yaml.YAMLError as exc:  # the message names the file, line and column
        raise ConfigError(f"a config file is not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"a config file in {config_dir} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configs in {config_dir}: {exc}") from None
    # Hydra reports a malformed `defaults` list with ValueError, TypeError or even AssertionError.
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, AssertionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{config_dir / (config_name + '.yaml')}: {detail}") from None


SchemaT = TypeVar("SchemaT")


def load_config(schema: type[SchemaT], config_dir: Path, config_name: str, overrides: list[str]) -> SchemaT:
    """Compose, check keys and types against `schema`, then check values. Raises ConfigError."""
    valid = schema_keys(schema)
    _parse_overrides(overrides, valid)
    raw = compose(config_dir, config_name, overrides)
    # Unresolved: a broken interpolation is reported by the merge below, with its key.
    _check_keys(OmegaConf.to_container(raw, resolve=False), valid, f"{config_dir / config_name}.yaml")  # type: ignore[arg-type]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from exc
    cfg.validate()  # type: ignore[attr-defined]
    return cfg  # type: ignore[return-value]

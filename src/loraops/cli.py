"""Command line: parse, compose the config, call one function per command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from loraops import __version__, distributed, paths
from loraops.config import CompareConfig, EvalConfig, TrainConfig, help_rows, load_config
from loraops.config.compose import PROJECT_CONFIGS
from loraops.errors import INTERRUPTED_EXIT, TERMINATED_EXIT, USER_ERROR_EXIT, ConfigError, LoraopsError, Terminated
from loraops.serve.limits import MIB, Limits

log = logging.getLogger("loraops")


def _keys_epilog(schema: type) -> str:
    width = max(len(key) for key, _, _ in help_rows(schema))
    lines = [f"  {key:<{width}}  {default!r:<14} {text}" for key, default, text in help_rows(schema)]
    return "config keys (override with key=value):\n" + "\n".join(lines)


def _add_config_dir(parser: argparse.ArgumentParser, what: str = "folder of YAML configs") -> None:
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=PROJECT_CONFIGS,
        help=f"{what} (default: ./configs; a config it lacks comes from those shipped with loraops)",
    )


def _add_config_args(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument(
        "--config-name", default=default_name, help=f"config in the config dir (default: {default_name})"
    )
    _add_config_dir(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides, e.g. lr=1e-4 lora_r=8")


def _config_command(
    sub: argparse._SubParsersAction, name: str, config: str, schema: type, help: str, description: str
) -> argparse.ArgumentParser:
    """A command driven by <config>.yaml, whose --help lists every key of `schema`."""
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_keys_epilog(schema),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(parser, config)
    return parser


def _add_publish_parsers(sub: argparse._SubParsersAction) -> None:
    gate = (
        "Refused (exit 1) unless `loraops compare` says the run improved on its reference, "
        "(exit 2) if it was never evaluated; --force overrides and the model card says so. "
        "A successful publish makes the run the reference for `compare`."
    )
    local = sub.add_parser(
        "publish",
        help="copy a run's model, card, config and metrics to artifacts/models/<run>/",
        description="Publish a run locally, replacing an earlier copy atomically. " + gate,
    )
    hub = sub.add_parser(
        "publish-hf",
        help="upload a run's adapter, tokenizer and card to the Hugging Face Hub",
        description="Create the repository if needed (private unless "
        "--public) and upload. Token: HF_TOKEN or `hf auth login`; repository: --repo or "
        "HF_REPO_ID. " + gate,
    )
    hub.add_argument("--repo", metavar="OWNER/NAME", help="Hub repository (default: $HF_REPO_ID)")
    hub.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    for parser in (local, hub):
        parser.add_argument(
            "model_path",
            nargs="?",
            default=None,  # None: `latest`, which --force will not publish unevaluated
            metavar="MODEL_PATH",
            help=f"run folder (default: {paths.LATEST_RUN})",
        )
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="compare.yaml overrides, e.g. tracking=mlflow (default tracking: the run's own)",
        )
        parser.add_argument(
            "--merged",
            action="store_true",
            help="publish a standalone model with the LoRA weights merged in (no PEFT needed)",
        )
        parser.add_argument(
            "--format",
            choices=("safetensors", "gguf"),
            default="safetensors",
            help="gguf: also the run's GGUF files that `loraops export` wrote and proved (default: safetensors only)",
        )
        parser.add_argument("--force", action="store_true", help="publish even if the gate refuses")
        parser.add_argument(
            "--artifacts-dir",
            default=None,
            help="folder of metrics, models/<run>/ and the reference record "
            "(default: compare.yaml's artifacts_dir, artifacts)",
        )
        _add_config_dir(parser, "folder holding compare.yaml, whose settings the gate uses")


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="the run as GGUF for llama.cpp and Ollama, or as a folder vLLM serves, proven by generation",
        description="Export a run into artifacts/exports/<run>/<format>/: --format gguf writes the LoRA as GGUF "
        "(llama.cpp's own converter), its base, an Ollama Modelfile and, with --merged, the merged model "
        "(--quantize q8_0|q4_k_m|...); the files are then run by llama.cpp on an eval split's prompts and kept "
        "only if they reproduce the fine-tuned model's answers, eval's or generated first "
        "(export_min_agreement in compare.yaml; exit 1 otherwise, "
        "unless --force). --format vllm writes the adapter checked against what vLLM loads.",
    )
    export.add_argument(
        "model_path",
        nargs="?",
        default=paths.LATEST_RUN,
        metavar="MODEL_PATH",
        help=f"run folder (default: {paths.LATEST_RUN})",
    )
    export.add_argument("--format", choices=("gguf", "vllm"), default="gguf", help="what to export (default gguf)")
    export.add_argument("--merged", action="store_true", help="gguf: also the merged model, as F16")
    export.add_argument("--quantize", metavar="TYPE", help="gguf: also the merged model quantised (q8_0, q4_k_m...)")
    export.add_argument("--limit", type=int, metavar="N", help="prove on the first N prompts of each split only")
    export.add_argument(
        "--split",
        action="append",
        metavar="NAME",
        help="eval split whose prompts prove the files, repeatable (default: compare.yaml's primary_split); a "
        "split never evaluated is answered by the PEFT model first",
    )
    export.add_argument("--out", metavar="DIR", help="folder to write (default: artifacts/exports/<run>/<format>)")
    export.add_argument("--force", action="store_true", help="keep the files even below the agreement threshold")
    export.add_argument("--artifacts-dir", default=None, help="folder of metrics and exports (default: artifacts)")
    _add_config_dir(export, "folder holding compare.yaml (primary_split, export_min_agreement)")


DEFAULT_REPLY_TOKENS = 256  # chat's longest reply; serve's for requests without max_tokens
_MODEL_HELP = (
    f"a run folder (default: {paths.LATEST_RUN}) or run name, a published folder "
    "(artifacts/models/<run>), a model folder, or a model name (`default`: the untouched default model)"
)


def _add_model_parsers(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser(
        "chat",
        help="chat with a run, a published model or a base model in the terminal",
        description="Replies stream as they are generated; the conversation is rendered with "
        "the chat template as in training. /reset, /system TEXT, /exit; "
        "Ctrl-C stops a reply, Ctrl-D or Ctrl-C at the prompt quits.",
    )
    chat.add_argument("--system", help="system prompt (default: the one the run trained with)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); above 0: sampling")
    chat.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0)")
    chat.add_argument("--do-sample", action="store_true", help="sample (at temperature 1.0 unless --temperature)")
    chat.add_argument("--seed", type=int, default=None, help="seed for sampling, for repeatable replies")
    serve = sub.add_parser(
        "serve",
        help="serve a run, a published model or a base model over an OpenAI-compatible API",
        description="OpenAI's API at http://HOST:PORT/v1: GET /v1/models, POST /v1/chat/completions (tools, "
        "JSON output, logprobs) and /v1/completions, streamed or not, vLLM's /tokenize and /detokenize, GET /health; "
        "the model id is the run's name. With LORAOPS_API_KEY set (environment or .env), requests need "
        "`Authorization: Bearer <key>`. --engine vllm hands several runs to vLLM's server on a GPU.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the API, e.g. http://localhost:3000 (repeatable; default: none)",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        help=f"requests that may wait for the model; one more gets 429 (default: {Limits.max_queue})",
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        help=f"requests generated together when they arrive together (default: {Limits.max_batch}; 1: one at a time; "
        "--engine vllm: its --max-num-seqs)",
    )
    serve.add_argument(
        "--max-body-mb",
        type=float,
        help=f"largest request body in MiB; larger gets 413 (default: {Limits.max_body_bytes // MIB})",
    )
    serve.add_argument(
        "--tensor-parallel-size",
        type=int,
        help="with --engine vllm: GPUs one model is split across (vLLM's tensor parallelism; default: 1)",
    )
    serve.add_argument(
        "--vllm-args",
        default="",
        metavar="ARGS",
        help="with --engine vllm: more `vllm serve` flags as one string, after `=`: --vllm-args='--enforce-eager'",
    )
    chat.add_argument("model", nargs="?", default=paths.LATEST_RUN, metavar="RUN", help=_MODEL_HELP)
    serve.add_argument(
        "model",
        nargs="*",
        default=[paths.LATEST_RUN],
        metavar="RUN",
        help=_MODEL_HELP + "; several runs with --engine vllm",
    )
    for parser, engines in ((chat, ("transformers", "llamacpp")), (serve, ("transformers", "llamacpp", "vllm"))):
        parser.add_argument(
            "--engine",
            choices=engines,
            default="transformers",
            help="llamacpp: run the run's GGUF export (`loraops export`) with llama.cpp, as it will ship"
            + ("; vllm: vLLM's server with each run's vLLM export as a LoRA module (GPU)" if "vllm" in engines else ""),
        )
        parser.add_argument(
            "--gguf",
            choices=("lora", "merged", "quantized"),
            help="with --engine llamacpp: which exported file (default: the LoRA on its base, if exported)",
        )
        parser.add_argument(
            "--max-new-tokens",
            type=int,
            help="longest reply in tokens (default: 256; serve: for requests without max_tokens; "
            "--engine vllm: also the most any request gets)",
        )


REMOTE_ACTIONS = {
    "push": "sync the project (no .venv, outputs, artifacts, models, caches or .env) to REMOTE_DIR",
    "init": "push, then create the remote .venv and install there (`make install`, default model included)",
    "train": "push, then train on the server; pulls the run back into output_dir and updates its `latest`",
    "eval": "push, then evaluate the remote latest run there; pulls the run and the metrics folder back",
    "eval-baseline": "push, then evaluate the untouched base model there; pulls the metrics folder back",
    "pull": "bring a remote run (default: the remote latest in output_dir) and the metrics folder home",
    "logs": "print the last remote job's log and follow it to its end; exit status: the job's",
}
_REMOTE_JOB_CONFIGS = {"train": "train", "eval": "eval", "eval-baseline": "eval_baseline"}


def _add_remote_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    remote = sub.add_parser(
        "remote",
        help="push, train, evaluate and pull on a GPU server over SSH",
        formatter_class=fmt,
        description="Run the pipeline on a server over SSH. Settings: the `remote:` section "
        "of the config (configs/remote.yaml), overridden by REMOTE_HOST, REMOTE_DIR, "
        "REMOTE_USER, REMOTE_PORT, REMOTE_SSH_KEY, REMOTE_SSH_OPTS, REMOTE_PYTHON "
        "from the environment or .env.",
    )
    actions = remote.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in REMOTE_ACTIONS.items():
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        # The job's own config, or (push, init, pull, logs) the train config: remote settings, output_dir.
        _add_config_args(action, _REMOTE_JOB_CONFIGS.get(name, "train"))
        if name in ("init", *_REMOTE_JOB_CONFIGS):
            action.add_argument("--no-push", action="store_true", help="use the code already on the server")
            action.add_argument(
                "--detach", action="store_true", help="start the job and return; `loraops remote logs` follows it"
            )
    actions.choices["pull"].add_argument("--run", help="remote run name in output_dir (default: the remote latest)")
    actions.choices["pull"].add_argument("--job", help="pull the run that this remote job made or evaluated")
    actions.choices["logs"].add_argument("--job", help="job id in outputs/remote/ on the server (default: the last)")
    actions.choices["logs"].add_argument("--no-follow", action="store_true", help="print the log so far and return")


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report",
        help="write an HTML report of a run (curves, metrics, verdict, examples, lineage)",
        description="One self-contained HTML file under <artifacts_dir>/reports/ that opens "
        "offline: training and validation curves, eval metrics against the "
        "reference with intervals, the verdict, flips and predictions, lineage. "
        "Several runs: one page with them side by side.",
    )
    report.add_argument(
        "runs", nargs="*", metavar="RUN", help=f"run folders or run names (default: {paths.LATEST_RUN})"
    )
    report.add_argument("--samples", type=int, default=8, help="predictions shown per split (default: 8)")
    report.add_argument(
        "--artifacts-dir",
        default=None,
        help="folder of metrics and reports/ (default: compare.yaml's artifacts_dir, artifacts)",
    )
    _add_config_dir(report, "folder holding compare.yaml, which says where the metrics are")


class ConfigCommand(NamedTuple):
    """A command a config drives: its default config, schema, one-line help and description."""

    name: str
    config: str
    schema: type[BaseModel]
    help: str
    description: str


CONFIG_COMMANDS = (
    ConfigCommand(
        "train",
        "train",
        TrainConfig,
        "train a LoRA adapter",
        f"Train a LoRA adapter into {paths.RUNS_DIR}/<timestamp>/.",
    ),
    ConfigCommand(
        "check",
        "train",
        TrainConfig,
        "validate config and data and show what training would see",
        "Validate the training config and data without training: counts, token lengths, truncation, masking, "
        "one example as the model sees it, and the predicted peak memory and time per epoch on this machine.",
    ),
    ConfigCommand(
        "eval",
        "eval",
        EvalConfig,
        "evaluate an adapter (or, with eval_baseline, its base model)",
        "Generate on data/eval/*.jsonl and score the answers.",
    ),
    ConfigCommand(
        "compare",
        "compare",
        CompareConfig,
        "compare a run's eval metrics with the reference, with intervals and a verdict",
        "Fine-tuned against reference, example by example, per split and metric. Exit status 0: IMPROVED "
        "(significantly), 1: NOT IMPROVED (or a guard tripped), 3: INCONCLUSIVE, 2: errors (metrics missing, "
        "or not comparable).",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraops", description="LoRA fine-tuning pipeline for causal LMs.")
    parser.add_argument("--version", action="version", version=f"loraops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {command.name: _config_command(sub, *command) for command in CONFIG_COMMANDS}
    commands["check"].add_argument("--example", type=int, default=0, help="index of the example to render (default: 0)")
    commands["check"].add_argument(
        "--verbose", action="store_true", help="the memory estimate's breakdown, not only its peak and time"
    )
    flips = "print N fixed and N broken examples per split (default: show_flips)"
    commands["compare"].add_argument("--flips", type=int, default=None, metavar="N", help=flips)
    _add_publish_parsers(sub)
    _add_export_parser(sub)
    _add_model_parsers(sub)
    _add_remote_parser(sub, argparse.RawDescriptionHelpFormatter)
    _add_report_parser(sub)
    _add_tool_parsers(sub)
    return parser


def _add_tool_parsers(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="turn pretty-printed JSON and ChatGPT exports into JSONL",
        description="Convert every .json/.jsonl file in a folder that is not already JSONL in a supported format; "
        "sources are never modified. Each file is reported as converted, skipped or failed; exit status 2 if any "
        "failed.",
    )
    convert.add_argument("input_dir", nargs="?", type=Path, default=Path("data"), help="folder to scan (default: data)")
    convert.add_argument("--output-dir", type=Path, default=None, help="where to write (default: beside the sources)")
    configs = sub.add_parser(
        "list-configs",
        help="list the configs: the project's (./configs) and those shipped with loraops",
        description="List the project's configs and those shipped with loraops, with the first comment line of "
        "each; a project config hides a shipped one of the same name.",
    )
    _add_config_dir(configs)
    prepare = "Convert the embedded SmolLM2-135M-Instruct GGUF to a Hugging Face folder."
    sub.add_parser(
        "prepare-model", help="convert the embedded default model once (`make install` runs it)", description=prepare
    )
    sub.add_parser("version", help="print versions", description="Print loraops and library versions.")
    devices = "What training can use here: `remote init` runs it on the server."
    sub.add_parser("devices", help="list this machine's GPUs (count, memory, bf16) and CPU", description=devices)


def cmd_train(args: argparse.Namespace) -> int:
    from loraops.launch import plan
    from loraops.train import preflight, train

    cfg = load_config(TrainConfig, args.config_dir, args.config_name, args.overrides)
    launch = plan(cfg)  # several GPUs: one process each; what cannot run here is refused now
    if launch.relaunches(cfg.accelerate_config):
        preflight(cfg)  # a data error is said once, here, not by each process
        argv = ["train", "--config-dir", str(args.config_dir), "--config-name", args.config_name, *args.overrides]
        return distributed.relaunch(launch.processes, cfg.accelerate_config, argv)
    result = train(cfg, launch)
    if distributed.is_main():
        print(f"run: {result.run_dir}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from loraops.check import check, format_report

    cfg = load_config(TrainConfig, args.config_dir, args.config_name, args.overrides)
    print(format_report(check(cfg, args.example), args.verbose))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from loraops.eval.evaluate import evaluate

    result = evaluate(load_config(EvalConfig, args.config_dir, args.config_name, args.overrides))
    print(f"metrics: {result.out_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from loraops.eval.compare import compare, format_table

    cfg = load_config(CompareConfig, args.config_dir, args.config_name, args.overrides)
    result = compare(cfg)
    print(format_table(result, cfg.show_flips if args.flips is None else args.flips))
    return result.exit_code


def cmd_convert(args: argparse.Namespace) -> int:
    from loraops.data.convert import convert_folder, failed, format_reports

    reports = convert_folder(args.input_dir, args.output_dir)
    print(format_reports(reports))
    # The other files are done; the status still says the folder is not all converted, for make and CI.
    if bad := failed(reports):
        print(f"loraops: error: {len(bad)} of {len(reports)} files failed to convert (see above)", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


def _gate_config(args: argparse.Namespace) -> CompareConfig:
    """The gate judges like `loraops compare` does: same primary metric, split, min_delta and files."""
    overrides = [f"artifacts_dir={args.artifacts_dir}"] if args.artifacts_dir else []
    return load_config(CompareConfig, args.config_dir, "compare", overrides + list(getattr(args, "overrides", [])))


def _split_run_and_overrides(args: argparse.Namespace) -> None:
    """`publish tracking=mlflow`: argparse takes the first key=value for the optional run; it is an override."""
    if args.model_path and "=" in args.model_path and not Path(args.model_path).exists():
        args.overrides, args.model_path = [args.model_path, *args.overrides], None


def _publish(args: argparse.Namespace, publish: Any, **kwargs: Any) -> int:
    from loraops.eval.compare import format_table
    from loraops.publish import NotImprovedError

    _split_run_and_overrides(args)
    try:
        result = publish(
            args.model_path or paths.LATEST_RUN,
            named_run=args.model_path is not None,
            follow_tracking=not any(o.split("=", 1)[0].lstrip("+") == "tracking" for o in args.overrides),
            merged=args.merged,
            force=args.force,
            compare_cfg=_gate_config(args),
            gguf=args.format == "gguf",
            **kwargs,
        )
    except NotImprovedError as exc:  # evaluated, and not (significantly) better: compare's exit status, 1 or 3
        print(f"loraops: {exc}", file=sys.stderr)
        return exc.exit_code
    if result.comparison is not None:
        print(format_table(result.comparison))
    if result.forced:
        print(f"warning: published with --force over: {result.forced_reason}; the model card says so")
    kind = "merged model" if result.merged else "adapter"
    print(f"published: {result.path or result.url} ({kind}, {len(result.files)} files)")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from loraops.publish import publish_local

    return _publish(args, publish_local)


def cmd_publish_hf(args: argparse.Namespace) -> int:
    from loraops.publish import publish_hub

    # httpx2 logs every request at INFO; on the real Hub those lines carry pre-signed storage URLs.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    return _publish(args, publish_hub, repo_id=args.repo, public=args.public)


def cmd_export(args: argparse.Namespace) -> int:
    from loraops.export.command import Request, export

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    request = Request(
        args.format,
        args.merged,
        args.quantize and args.quantize.lower(),
        args.limit,
        args.out,
        args.force,
        tuple(args.split or ()),
        args.config_dir,
    )
    result = export(args.model_path, request, _gate_config(args))
    for agreement in result.record.agreement:
        print(
            f"{agreement['artifact']} on {agreement['split']} ({agreement['examples']} prompts): "
            f"{agreement['exact']:.1%} identical answers, {agreement['tokens']:.1%} token agreement"
        )
    if not result.placed:
        print(
            f"loraops: the exported files answered unlike the evaluated model (below export_min_agreement="
            f"{result.record.min_agreement}); nothing was written (--force keeps them)",
            file=sys.stderr,
        )
        return 1
    for note in result.record.notes:
        print(f"note: {note}")
    print(f"exported: {result.path}")
    print("\n".join(result.record.commands))
    return 0


def cmd_remote(args: argparse.Namespace) -> int:
    from loraops import remote

    # Composed and checked here, so a typo fails before anything is sent to the server.
    evaluating = args.action in ("eval", "eval-baseline")
    schema: type[TrainConfig | EvalConfig] = EvalConfig if evaluating else TrainConfig
    cfg = load_config(schema, args.config_dir, args.config_name, args.overrides)
    settings = remote.load_settings(Path.cwd(), cfg.remote)
    # The server runs the code, configs and data pushed just now, so a remote run matches a local one.
    if args.action == "push" or (args.action in ("init", *_REMOTE_JOB_CONFIGS) and not args.no_push):
        remote.push(settings)
    if args.action == "init":
        return remote.init(settings, detach=args.detach).exit_code
    if args.action == "train" and isinstance(cfg, TrainConfig):
        return remote.train(settings, args.config_name, args.overrides, args.detach, cfg.output_dir).exit_code
    if isinstance(cfg, EvalConfig):
        job = remote.evaluate(settings, args.config_name, args.overrides, args.detach, cfg.metrics_dir, cfg.model)
        return job.exit_code
    if args.action == "pull":
        metrics_dir = load_config(EvalConfig, args.config_dir, "eval", []).metrics_dir
        result = remote.pull(settings, args.run, cfg.output_dir, metrics_dir, job=args.job)
        return 0 if result.run_dir or result.metrics_dir else 1
    if args.action == "logs":
        return remote.logs(settings, args.job, follow=not args.no_follow)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from loraops.chat import chat, check_settings
    from loraops.eval.generate import GenerationSettings

    max_new_tokens = DEFAULT_REPLY_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    check_settings(args.temperature, args.top_p, max_new_tokens)
    settings = GenerationSettings.sampling(max_new_tokens, args.temperature, args.top_p, args.do_sample)
    chat(args.model, settings, args.system, args.seed, args.engine, args.gguf)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from loraops.serve.command import serve, serve_vllm

    if args.engine == "vllm":
        _only_for_loraops_engines(args)
        settings = (args.max_new_tokens, args.max_batch, args.cors_origin, args.tensor_parallel_size, args.vllm_args)
        serve_vllm(args.model, args.host, args.port, *settings)
        return 0
    if len(args.model) > 1:
        raise ConfigError(f"one model at a time ({len(args.model)} given); several runs are served with --engine vllm")
    if args.tensor_parallel_size is not None or args.vllm_args:
        raise ConfigError("--tensor-parallel-size and --vllm-args are vLLM's: they need --engine vllm")
    limits = Limits()
    limits = Limits(
        max_body_bytes=int(args.max_body_mb * MIB) if args.max_body_mb is not None else limits.max_body_bytes,
        max_queue=limits.max_queue if args.max_queue is None else args.max_queue,
        max_batch=limits.max_batch if args.max_batch is None else args.max_batch,
    )
    if limits.max_queue < 0 or limits.max_body_bytes <= 0 or limits.max_batch < 1:
        raise ConfigError("--max-queue must be 0 or more, --max-batch 1 or more and --max-body-mb above 0")
    max_new_tokens = DEFAULT_REPLY_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    serve(args.model[0], args.host, args.port, max_new_tokens, args.engine, args.gguf, limits, args.cors_origin)
    return 0


def _only_for_loraops_engines(args: argparse.Namespace) -> None:
    """Refuse what vLLM's server has no setting for, rather than drop it."""
    if args.gguf is not None:
        raise ConfigError("--gguf picks a file of the GGUF export: it needs --engine llamacpp")
    if args.max_queue is not None or args.max_body_mb is not None:
        raise ConfigError("--max-queue and --max-body-mb are loraops serve's own limits: vLLM's server has neither")
    if (args.max_batch is not None and args.max_batch < 1) or (args.tensor_parallel_size or 1) < 1:
        raise ConfigError("--max-batch and --tensor-parallel-size must be 1 or more")


def cmd_list_configs(args: argparse.Namespace) -> int:
    found = {p.stem: p for folder in (paths.shipped_configs(), args.config_dir) for p in sorted(folder.glob("*.yaml"))}
    for name, path in sorted(found.items()):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{name:<24} {first}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from loraops.report import build_report

    if args.samples < 0:
        raise LoraopsError(f"--samples {args.samples}: must be 0 or more")
    overrides = [f"artifacts_dir={args.artifacts_dir}"] if args.artifacts_dir else []
    cfg = load_config(CompareConfig, args.config_dir, "compare", overrides)
    print(f"report: {build_report(args.runs, cfg.artifacts_dir, cfg.metrics_dir, args.samples)}")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from loraops.models import prepare_default_model

    print(f"default model: {prepare_default_model()}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from loraops.environment import describe_devices

    print(describe_devices())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from loraops.provenance import library_versions

    for name, version in library_versions().items():
        print(f"{name} {version or '(not installed)'}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "check": cmd_check,
    "eval": cmd_eval,
    "compare": cmd_compare,
    "convert": cmd_convert,
    "publish": cmd_publish,
    "publish-hf": cmd_publish_hf,
    "export": cmd_export,
    "remote": cmd_remote,
    "chat": cmd_chat,
    "serve": cmd_serve,
    "list-configs": cmd_list_configs,
    "prepare-model": cmd_prepare_model,
    "version": cmd_version,
    "devices": cmd_devices,
    "report": cmd_report,
}


def _load_dotenv() -> None:
    """Read ./.env (git-ignored) for secrets and settings; variables already set win."""
    from dotenv import load_dotenv

    load_dotenv(Path(".env"), override=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _load_dotenv()
    if not distributed.is_main():  # the other ranks of a multi-process run: their log would repeat the main one
        logging.getLogger("loraops").setLevel(logging.WARNING)
    # peft 0.21 calls a transformers 5 alias deprecated in favour of is_activation_checkpointing; not ours to fix.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s loraops: %(message)s", datefmt="%H:%M:%S")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except (LoraopsError, OSError) as exc:  # OSError: a path the system refused (permissions, a full disk)
        # The message may quote the user's broken text: lone surrogates are shown escaped, never a crash.
        print(f"loraops: error: {str(exc).encode('utf-8', 'backslashreplace').decode('utf-8')}", file=sys.stderr)
        return USER_ERROR_EXIT
    except Terminated:
        print("loraops: terminated", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        print("loraops: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())

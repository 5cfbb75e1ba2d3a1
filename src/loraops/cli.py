"""Command line: parse, compose the config, call one function per command."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from loraops import __version__
from loraops.config import CompareConfig, EvalConfig, TrainConfig, help_rows, load_config
from loraops.errors import USER_ERROR_EXIT, LoraopsError

log = logging.getLogger("loraops")


def _keys_epilog(schema: type) -> str:
    width = max(len(key) for key, _, _ in help_rows(schema))
    lines = [f"  {key:<{width}}  {default!r:<14} {text}" for key, default, text in help_rows(schema)]
    return "config keys (override with key=value):\n" + "\n".join(lines)


def _add_config_args(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument("--config-name", default=default_name, help=f"config in the config dir (default: {default_name})")
    parser.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder of YAML configs (default: configs)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides, e.g. lr=1e-4 lora_r=8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraops", description=__doc__ and "LoRA fine-tuning pipeline for causal LMs.")
    parser.add_argument("--version", action="version", version=f"loraops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    train = sub.add_parser("train", help="train a LoRA adapter", formatter_class=fmt,
                           description="Train a LoRA adapter into outputs/runs/<timestamp>/.",
                           epilog=_keys_epilog(TrainConfig))  # fmt: skip
    _add_config_args(train, "train")

    check = sub.add_parser("check", help="validate config and data and show what training would see",
                           formatter_class=fmt, epilog=_keys_epilog(TrainConfig),
                           description="Validate the training config and data without training: counts, token "
                                       "lengths, truncation, masking, and one example as the model sees it.")  # fmt: skip
    _add_config_args(check, "train")
    check.add_argument("--example", type=int, default=0, help="index of the example to render (default: 0)")

    evaluate = sub.add_parser("eval", help="evaluate an adapter (or, with eval_baseline, its base model)",
                              formatter_class=fmt, epilog=_keys_epilog(EvalConfig),
                              description="Generate on data/eval/*.jsonl and score the answers.")  # fmt: skip
    _add_config_args(evaluate, "eval")
    compare = sub.add_parser("compare", help="compare a run's eval metrics with the reference",
                             formatter_class=fmt, epilog=_keys_epilog(CompareConfig),
                             description="Fine-tuned against reference, per split and metric; exit 0 if it "
                                         "improved on the primary metric, 1 if not, 2 if metrics are missing.")  # fmt: skip
    _add_config_args(compare, "compare")

    convert = sub.add_parser("convert", help="turn pretty-printed JSON and ChatGPT exports into JSONL",
                             description="Convert every .json/.jsonl file in a folder that is not already JSONL "
                                         "in a supported format; sources are never modified.")  # fmt: skip
    convert.add_argument("input_dir", nargs="?", type=Path, default=Path("data"), help="folder to scan (default: data)")
    convert.add_argument("--output-dir", type=Path, default=None, help="where to write (default: beside the sources)")

    sub.add_parser("list-configs", help="list the configs in the config dir",
                   description="List configs/*.yaml with their first comment line.").add_argument(
        "--config-dir", type=Path, default=Path("configs"))  # fmt: skip
    sub.add_parser("prepare-model", help="convert the embedded default model once (make install runs it)",
                   description="Convert the embedded SmolLM2-135M-Instruct GGUF to a Hugging Face folder.")  # fmt: skip
    sub.add_parser("version", help="print versions", description="Print loraops and library versions.")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from loraops.train import train

    cfg = load_config(TrainConfig, args.config_dir, args.config_name, args.overrides)
    result = train(cfg)
    print(f"run: {result.run_dir}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from loraops.check import check, format_report

    cfg = load_config(TrainConfig, args.config_dir, args.config_name, args.overrides)
    print(format_report(check(cfg, args.example)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from loraops.eval.evaluate import evaluate

    result = evaluate(load_config(EvalConfig, args.config_dir, args.config_name, args.overrides))
    print(f"metrics: {result.out_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from loraops.eval.compare import IMPROVED_EXIT, NOT_IMPROVED_EXIT, compare, format_table

    result = compare(load_config(CompareConfig, args.config_dir, args.config_name, args.overrides))
    print(format_table(result))
    return IMPROVED_EXIT if result.improved else NOT_IMPROVED_EXIT


def cmd_convert(args: argparse.Namespace) -> int:
    from loraops.data.convert import convert_folder, format_reports

    print(format_reports(convert_folder(args.input_dir, args.output_dir)))
    return 0


def cmd_list_configs(args: argparse.Namespace) -> int:
    paths = sorted(Path(args.config_dir).glob("*.yaml"))
    if not paths:
        raise LoraopsError(f"no configs in {args.config_dir}")
    for path in paths:
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{path.stem:<20} {first}")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from loraops.models import prepare_default_model

    print(f"default model: {prepare_default_model()}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from loraops.runs import library_versions

    for name, version in library_versions().items():
        print(f"{name} {version or '(not installed)'}")
    return 0


COMMANDS = {"train": cmd_train, "check": cmd_check, "eval": cmd_eval, "compare": cmd_compare, "convert": cmd_convert, "list-configs": cmd_list_configs, "prepare-model": cmd_prepare_model, "version": cmd_version}


def _load_dotenv() -> None:
    """Read ./.env (git-ignored) for secrets and settings; variables already set win."""
    from dotenv import load_dotenv

    load_dotenv(Path(".env"), override=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _load_dotenv()
    # peft 0.21 calls a transformers 5 alias deprecated in favour of is_activation_checkpointing; not ours to fix.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s loraops: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except LoraopsError as exc:
        print(f"loraops: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("loraops: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Reading a config: Hydra composition of YAML files and `key=value` overrides, then the typed schema.

The config files are looked up in the project's config folder (`--config-dir`, default ./configs), then
among the configs shipped inside the package, so an installed loraops runs without a checkout. Every
config is checked before it is returned: an unknown key names its file and the closest valid key, a wrong
value names the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from loraops.config.schema import schema_keys
from loraops.errors import ConfigError
from loraops.paths import shipped_configs

SchemaT = TypeVar("SchemaT", bound=BaseModel)
PROJECT_CONFIGS = Path("configs")


def find_config(config_dir: Path, config_name: str) -> Path:
    """The folder whose <config_name>.yaml is used: the project's when it has one, else the shipped one."""
    for folder in (config_dir, shipped_configs()):
        if (folder / f"{config_name}.yaml").is_file():
            return folder.resolve()
    names = sorted({p.stem for folder in (config_dir, shipped_configs()) for p in folder.glob("*.yaml")})
    raise ConfigError(f"no config {config_dir / (config_name + '.yaml')} (available: {', '.join(names) or 'none'})")


def compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose <config_name>.yaml with Hydra and apply `key=value` overrides; a project config's `defaults`
    may name shipped configs (remote, eval) it does not copy."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    folder = find_config(Path(config_dir), config_name)
    search = [f"hydra.searchpath=[file://{shipped_configs().resolve()}]"]
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            return hydra_compose(config_name=config_name, overrides=[*overrides, *search])
    except yaml.YAMLError as exc:  # the message names the file, line and column
        raise ConfigError(f"a config file is not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"a config file in {folder} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configs in {folder}: {exc}") from None
    # Hydra reports a malformed `defaults` list with ValueError, TypeError or even AssertionError.
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, AssertionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{folder / (config_name + '.yaml')}: {detail}") from None


def load_config(schema: type[SchemaT], config_dir: Path | None, config_name: str, overrides: list[str]) -> SchemaT:
    """Compose, check keys against `schema`, then validate types and values. Raises ConfigError."""
    config_dir = Path(config_dir or PROJECT_CONFIGS)
    valid = schema_keys(schema)
    _check_overrides(overrides, valid)
    raw = compose(config_dir, config_name, overrides)
    where = find_config(config_dir, config_name) / f"{config_name}.yaml"
    _check_keys(OmegaConf.to_container(raw, resolve=False), valid, str(where))  # type: ignore[arg-type]
    return validated(schema, _resolved(raw))


def validated(schema: type[SchemaT], values: dict[str, Any]) -> SchemaT:
    """`values` as a `schema` config, or a ConfigError naming the first key that does not fit."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_explain(schema, exc.errors()[0])) from None


def _resolved(raw: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(raw, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:  # a broken ${...} interpolation
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None


def _explain(schema: type[BaseModel], error: Any) -> str:
    """`key=value problem`, in the words of this project's earlier messages."""
    loc = [part for part in error["loc"] if not str(part).startswith("function-")]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if error["type"] == "extra_forbidden":
        return str(_unknown_key_error(key, schema_keys(schema), "config"))
    if error["type"] == "missing":
        return f"{key} is required"
    return f"{key}={error['input']!r} {_problem(schema, loc, error)}"


_TYPE_PROBLEMS = {
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "string": "must be text",
    "list": "must be a list, e.g. [a, b]",
    "dict": "must be a mapping, e.g. {key: value}",
    "model": "must be a section of keys",
    "too_short": "must not be empty",
}


def _problem(schema: type[BaseModel], loc: list[Any], error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _bounds(_field_constraints(schema, loc))
    if kind == "finite_number":
        return "must be a finite number"
    for prefix, problem in _TYPE_PROBLEMS.items():
        if kind.startswith(prefix):
            return problem
    message = str(error["msg"])
    return message[:1].lower() + message[1:]


def _field_constraints(schema: type[BaseModel], loc: list[Any]) -> dict[str, Any]:
    model: Any = schema
    info = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            break
        info = model.model_fields[part]
        model = info.annotation
    found: dict[str, Any] = {}
    for item in info.metadata if info else []:
        found.update({k: getattr(item, k) for k in ("gt", "ge", "lt", "le") if getattr(item, k, None) is not None})
    return found


def _bounds(c: dict[str, Any]) -> str:
    low = ("[", c["ge"]) if "ge" in c else ("(", c["gt"]) if "gt" in c else None
    high = (c["le"], "]") if "le" in c else (c["lt"], ")") if "lt" in c else None
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low == ("(", 0):
        return "must be positive"
    if low and low[0] == "[":
        return f"must be at least {low[1]}" if low[1] else "must be >= 0"
    if low:
        return f"must be above {low[1]}"
    assert high is not None
    return f"must be at most {high[0]}" if high[1] == "]" else f"must be below {high[0]}"


# What other fine-tuning tools (transformers, axolotl, LLaMA-Factory, TRL) call some of loraops' keys.
OTHER_TOOLS_NAMES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "lora_rank": "lora_r",
    "base_model": "model_name",
    "model_name_or_path": "model_name",
    "sequence_len": "max_length",
    "max_seq_length": "max_length",
    "cutoff_len": "max_length",
    "lora_target": "lora_target_modules",
}


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    known = OTHER_TOOLS_NAMES.get(key)
    close = [known] if known in valid else difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key `{key}` ({where}){hint}")


def _check_keys(cfg: dict[Any, Any], valid: list[str], where: str, prefix: str = "") -> None:
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if dotted not in valid:
            raise _unknown_key_error(dotted, valid, where)
        if isinstance(value, dict) and any(k.startswith(dotted + ".") for k in valid):  # a section, not a mapping
            _check_keys(value, valid, where, dotted + ".")


def _check_overrides(overrides: list[str], valid: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse override: {exc}") from exc
    for override in parsed:
        if override.key_or_group not in valid:
            raise _unknown_key_error(override.key_or_group, valid, "command-line override")

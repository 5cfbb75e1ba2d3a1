"""Configuration: the typed schemas of every command (schema.py) and how a config is composed and checked
(compose.py). Every config a command uses comes through `load_config`, so none escapes validation."""

from loraops.config.compose import compose, find_config, load_config, validated
from loraops.config.schema import (
    ALL_PROJECTIONS,
    CARD,
    RECORDED,
    RESUMABLE,
    CompareConfig,
    DataSourceConfig,
    EvalConfig,
    GuardConfig,
    RemoteConfig,
    TrainConfig,
    help_rows,
    marked,
    schema_keys,
)

__all__ = [
    "ALL_PROJECTIONS",
    "CARD",
    "RECORDED",
    "RESUMABLE",
    "CompareConfig",
    "DataSourceConfig",
    "EvalConfig",
    "GuardConfig",
    "RemoteConfig",
    "TrainConfig",
    "compose",
    "find_config",
    "help_rows",
    "load_config",
    "marked",
    "schema_keys",
    "validated",
]

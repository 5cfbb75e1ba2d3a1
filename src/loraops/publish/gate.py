"""The publish gate: did the run beat its reference, as `loraops compare` judges it?"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.compare import Comparison, compare, format_table
from loraops.runs import RunDir


class GateError(LoraopsError):
    """Publishing was refused by the gate; `--force` overrides."""


class NotImprovedError(GateError):
    """The run was evaluated and compared, and did not beat its reference (CLI exit status 1)."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison


class NotEvaluatedError(GateError):
    """The run (or its reference) has no eval metrics, so nothing shows it helped (CLI exit status 2)."""


@dataclass(frozen=True)
class GateResult:
    comparison: Comparison | None  # None when the run was never evaluated and --force was used
    forced: bool  # True only when --force overrode a refusal
    reason: str | None  # why the gate would have refused, without paths: the model card quotes it when forced


def _primary_numbers(result: Comparison, min_delta: float) -> str:
    row = next(r for r in result.rows if r.split == result.primary_split and r.metric == result.primary_metric)
    ref = "n/a" if row.reference is None else f"{row.reference:.4g}"
    delta = "n/a" if row.delta is None else f"{row.delta:+.4g}"
    return (f"{result.primary_metric} on {result.primary_split}: {row.fine_tuned:.4g} for {result.run} against "
            f"{ref} for {result.reference} ({result.reference_kind}), delta {delta}, "
            f"needs more than {min_delta:+g}")  # fmt: skip


def check_gate(run: RunDir, compare_cfg: CompareConfig | None = None, *, force: bool = False) -> GateResult:
    """Compare the run with its reference; raise a GateError unless it improved or `force` is set."""
    cfg = replace(compare_cfg or CompareConfig(), run=str(run.path))
    try:
        result = compare(cfg)
    except LoraopsError as exc:
        # No paths in the reason: the model card quotes it.
        reason = f"{run.name} was never compared with its reference (eval metrics are missing)"
        if not force:
            raise NotEvaluatedError(f"refusing to publish: {reason}: {exc}; use --force to publish anyway") from None
        return GateResult(None, True, reason)
    if result.improved:
        return GateResult(result, False, None)
    reason = f"{run.name} did not improve on its reference: {_primary_numbers(result, cfg.min_delta)}"
    if not force:
        message = f"refusing to publish: {reason}; use --force to publish anyway\n{format_table(result)}"
        raise NotImprovedError(message, result)
    return GateResult(result, True, reason)

"""The publish gate: did the run beat its reference, as `loraops compare` judges it?"""

from __future__ import annotations

from dataclasses import dataclass

from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.compare import MissingMetricsError, compare, format_table
from loraops.records import Comparison
from loraops.runs import RunDir


class GateError(LoraopsError):
    """Publishing was refused by the gate; `--force` overrides."""


class NotImprovedError(GateError):
    """The run was compared and did not beat its reference significantly (CLI: compare's exit status, 1 or 3)."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison
        # compare's own status (1 or 3), and 1 when it improved but its eval data leaked from training
        self.exit_code = comparison.exit_code or 1


class NotEvaluatedError(GateError):
    """The run (or its reference) has no eval metrics, so nothing shows it helped (CLI exit status 2)."""


@dataclass(frozen=True)
class GateResult:
    comparison: Comparison | None  # None when the run was never evaluated and --force was used
    forced: bool  # True only when --force overrode a refusal
    reason: str | None  # why the gate would have refused, without paths: the model card quotes it when forced


def check_gate(
    run: RunDir, compare_cfg: CompareConfig | None = None, *, force: bool = False, named: bool = True
) -> GateResult:
    """Compare the run with its reference; raise a GateError unless it improved or `force` is set. `named`:
    the user named the run; --force never publishes a never-evaluated run that was only the default `latest`."""
    cfg = (compare_cfg or CompareConfig()).model_copy(update={"run": str(run.path)})
    try:
        result = compare(cfg)
    except MissingMetricsError as exc:
        # No paths in the reason: the model card quotes it.
        reason = f"{run.name} was never compared with its reference (eval metrics are missing)"
        if not force:
            raise NotEvaluatedError(f"refusing to publish: {exc}; use --force to publish anyway") from None
        if not named:
            raise NotEvaluatedError(
                f"refusing to publish: --force would publish the latest run, {run.name}, which was never evaluated; "
                "name the run to publish it unevaluated (`loraops publish outputs/runs/<run> --force`)"
            ) from None
        return GateResult(None, True, reason)
    except LoraopsError as exc:  # not comparable, or a broken record: say exactly that
        if not force:
            raise GateError(
                f"refusing to publish: the comparison failed: {exc}; use --force to publish anyway"
            ) from None
        return GateResult(None, True, f"{run.name} could not be compared with its reference")
    problems = [f"{result.verdict}: {'; '.join(result.reasons)}"] if not result.improved else []
    problems += _leakage(result, cfg.max_overlap)
    if not problems:
        return GateResult(result, False, None)
    reason = (
        f"{run.name} did not beat its reference {result.reference} ({result.reference_kind}): {' / '.join(problems)}"
    )
    if not force:
        message = f"refusing to publish: {reason}; use --force to publish anyway\n{format_table(result)}"
        raise NotImprovedError(message, result)
    return GateResult(result, True, reason)


def _leakage(result: Comparison, max_overlap: float) -> list[str]:
    """Splits whose examples are too often in the training data: their scores measure memory, not skill."""
    return [
        f"{o.near} of {o.n} {split} examples are also training data (allowed: {max_overlap:.0%})"
        for split, o in result.overlap.items()
        if o.share > max_overlap
    ]

"""The report's figures, drawn by matplotlib and kept as inline SVG text, so the page needs no network.

Figures are built on matplotlib.figure.Figure directly (no pyplot, no GUI backend, no global state).
Text stays text (svg.fonttype none: no glyph definitions shared between figures), and every figure
salts its ids with its own key, so several SVGs in one page never answer to each other's ids.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from html import escape
from typing import Any, ParamSpec, TypeVar

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from loraops.records import METRICS
from loraops.report.data import RunReport, Training

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
GAIN, LOSS, EVEN = "#2ca02c", "#d62728", "#7f7f7f"
UNITS = {"exact_match": "points (%)", "bleu": "BLEU points"}
P = ParamSpec("P")
R = TypeVar("R")


def to_svg(fig: Figure, key: str, label: str) -> str:
    """The figure as an <svg> element (no XML prologue), labelled for screen readers."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]
    return svg.replace("<svg ", f'<svg class="plot" role="img" aria-label="{escape(label)}" ', 1)


def plain_text(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw with every text as plain text: a `$` in a run or split name is a dollar sign, not math."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return drawn


@plain_text
def training_svg(series: list[tuple[str, Training]], key: str) -> str | None:
    """Loss (training and validation), learning rate and validation generation metrics, one panel each."""
    series = [(name, t) for name, t in series if t.recorded]
    if not series:
        return None
    panels = [("loss", _draw_loss)]
    if any(t.learning_rate for _, t in series):
        panels.append(("learning rate", _draw_lr))
    panels += [
        (f"validation {m}", _drawer_metric(m)) for m in METRICS if any(t.validation_series(m) for _, t in series)
    ]
    fig = Figure(figsize=(4.2 * len(panels), 3.2), layout="constrained")
    for ax, (title, draw) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for i, (name, t) in enumerate(series):
            draw(ax, t, name if len(series) > 1 else "", COLORS[i % len(COLORS)])
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:  # below the panels, where it covers no curve; a column per run when there are several
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=len(series) if len(series) > 1 else len(handles),
            fontsize=8,
            frameon=False,
        )
    return to_svg(fig, key, "training curves: " + ", ".join(title for title, _ in panels))


def _draw_loss(ax: Any, t: Training, name: str, color: str) -> None:
    prefix = f"{name} " if name else ""
    if t.loss:
        ax.plot(*zip(*t.loss), color=color, label=f"{prefix}training")
    validation = t.validation_series("loss")
    if validation:
        ax.plot(*zip(*validation), color=color, linestyle="--", marker="o", label=f"{prefix}validation")
    if t.best and t.select_metric == "loss" and t.best.get("step") is not None:
        ax.plot(
            [t.best["step"]],
            [t.best["value"]],
            marker="*",
            markersize=14,
            color=color,
            linestyle="none",
            label=f"{prefix}kept (step {t.best['step']})",
        )


def _draw_lr(ax: Any, t: Training, name: str, color: str) -> None:
    if t.learning_rate:
        ax.plot(*zip(*t.learning_rate), color=color)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def _drawer_metric(metric: str) -> Any:
    def draw(ax: Any, t: Training, name: str, color: str) -> None:
        points = t.validation_series(metric)
        if points:
            ax.plot(*zip(*points), color=color, linestyle="--", marker="o")
        if t.best and t.select_metric == metric and t.best.get("step") is not None:
            ax.plot([t.best["step"]], [t.best["value"]], marker="*", markersize=14, color=color, linestyle="none")

    return draw


@plain_text
def delta_svg(rows: list[dict[str, Any]], primary_metric: str, key: str) -> str | None:
    """Each split's paired delta (fine-tuned minus reference) with its interval, one panel per metric."""
    rows = [r for r in rows if r.get("delta") is not None]
    metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
    if not metrics:
        return None
    splits = list(dict.fromkeys(r["split"] for r in rows))
    cols = min(2, len(metrics))
    fig = Figure(
        figsize=(3.6 * cols, (0.9 + 0.42 * len(splits)) * math.ceil(len(metrics) / cols)), layout="constrained"
    )
    axes = list(fig.subplots(math.ceil(len(metrics) / cols), cols, squeeze=False).flat)
    for ax, metric in zip(axes, metrics):
        _draw_deltas(ax, [r for r in rows if r["metric"] == metric], splits)
        ax.set_title(f"{metric}{' (primary)' if metric == primary_metric else ''}", fontsize=10)
        ax.set_xlabel(f"delta, {UNITS.get(metric, 'score')}", fontsize=8)
    for ax in axes[len(metrics) :]:  # the grid's unused cells
        ax.set_visible(False)
    return to_svg(fig, key, "delta per split and metric with its interval")


def _draw_deltas(ax: Any, rows: list[dict[str, Any]], splits: list[str]) -> None:
    for row in rows:
        y = splits.index(row["split"])
        color = GAIN if row["low"] > 0 else LOSS if row["high"] < 0 else EVEN
        ax.errorbar(
            [row["delta"]],
            [y],
            xerr=[[row["delta"] - row["low"]], [row["high"] - row["delta"]]],
            fmt="o",
            color=color,
            capsize=4,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(splits)), splits)
    ax.set_ylim(len(splits) - 0.5, -0.5)  # the first split on top, as in the table
    ax.grid(axis="x", alpha=0.3)


@plain_text
def scores_svg(runs: list[RunReport], metric: str, key: str) -> str | None:
    """One bar per run for each split: the runs' scores on `metric` side by side."""
    splits = list(dict.fromkeys(s for run in runs for s, scores in run.evaluation.scores.items() if metric in scores))
    if not splits:
        return None
    fig = Figure(figsize=(max(5.0, 1.3 * len(splits) * len(runs) ** 0.5 + 2), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = [run.evaluation.scores.get(s, {}).get(metric, math.nan) for s in splits]
        bars = ax.bar(
            [x + (i - (len(runs) - 1) / 2) * width for x in range(len(splits))],
            values,
            width,
            label=run.name,
            color=COLORS[i % len(COLORS)],
        )
        ax.bar_label(bars, ["" if math.isnan(v) else f"{v:.3g}" for v in values], fontsize=7)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return to_svg(fig, key, f"{metric} per split, one bar per run")

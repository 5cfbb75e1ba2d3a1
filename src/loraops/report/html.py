"""The report as one self-contained HTML page: inline CSS, inline SVG, no scripts, nothing fetched.

Rendered by Jinja2 (already here: transformers renders chat templates with it) with autoescaping on,
so every prediction, prompt, path and config value is escaped; only the SVG that plots.py drew from
numbers is marked safe.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
import yaml
from markupsafe import Markup

from loraops import __version__
from loraops.report import plots
from loraops.report.data import ReportData, RunReport, config_differences, score_table

CLIP = 600  # characters of a prompt or answer shown; the predictions files hold them whole
FLIPS_SHOWN = 10

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2330;
       margin: 0; background: #f4f5f7; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 48px; }
header { background: #1d2330; color: #fff; padding: 18px 24px; }
header h1 { margin: 0 0 4px; font-size: 22px; } header p { margin: 0; color: #c4cad6; }
header code { background: #2c3446; color: #fff; }
nav { margin-top: 8px; display: flex; flex-wrap: wrap; gap: 4px 16px; } nav a { color: #9ec5ff; text-decoration: none; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 12px 18px; margin: 16px 0; }
h2 { font-size: 18px; margin: 4px 0 10px; } h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #dde1e8; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.primary td { background: #fff8e0; font-weight: 600; }
table.examples { width: 100%; table-layout: fixed; }
table.examples td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
                    white-space: pre-wrap; overflow-wrap: anywhere; }
table.examples col.score { width: 9em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
code { background: #f0f2f5; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: #f6f7f9; border: 1px solid #dde1e8; padding: 8px; overflow-x: auto; }
figure { margin: 8px 0; overflow-x: auto; } svg.plot { max-width: 100%; height: auto; display: block; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 12px; font-weight: 700; color: #fff; }
.IMPROVED { background: #2e7d32; } .NOT-IMPROVED { background: #c62828; } .INCONCLUSIVE { background: #ef8f00; }
.NONE { background: #7a8393; }
.missing { background: #fff4e5; border-left: 4px solid #ef8f00; padding: 6px 10px; }
.ok { color: #2e7d32; font-weight: 700; } .bad { color: #c62828; font-weight: 700; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 0 24px;
           align-items: start; }
.columns .wide { grid-column: 1 / -1; }
.eval-grid { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 0 24px; align-items: start; }
.eval-grid th { white-space: nowrap; }
@media (max-width: 1100px) { .eval-grid { grid-template-columns: minmax(0, 1fr); } }
.lineage table { width: 100%; } .lineage th { width: 12em; }
.lineage td:last-child { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
                         overflow-wrap: anywhere; }
.run-title { font-size: 20px; margin: 28px 0 0; }
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header>
  <h1>{{ title }}</h1>
  <p>generated {{ data.generated_at }} by loraops {{ version }} · metrics from <code>{{ data.metrics_dir }}</code></p>
  <nav>
    {% if side %}<a href="#side-by-side">side by side</a>{% endif %}
    {% for view in runs %}{% set p = view.prefix %}
    {% if side %}<a href="#{{ p }}">{{ view.run.name }}</a>{% else %}
    <a href="#{{ p }}-training">training</a><a href="#{{ p }}-evaluation">evaluation</a>
    <a href="#{{ p }}-verdict">verdict</a><a href="#{{ p }}-examples">examples</a>
    <a href="#{{ p }}-lineage">lineage</a>{% endif %}{% endfor %}
  </nav>
</header>
<main>
{% if side %}{% include "side" %}{% endif %}
{% for view in runs %}{% include "run" %}{% endfor %}
</main>
</body>
</html>
"""

SIDE = r"""<section id="side-by-side">
  <h2>{{ runs|length }} runs side by side</h2>
  {% if side.training_svg %}<h3>Training curves</h3><figure>{{ side.training_svg }}</figure>{% endif %}
  {% if side.scores_svg %}<h3>{{ side.metric }} per split</h3><figure>{{ side.scores_svg }}</figure>{% endif %}
  <table>
    <tr><th></th>{% for view in runs %}<th><a href="#{{ view.prefix }}">{{ view.run.name }}</a></th>{% endfor %}</tr>
    {% for label, values in side.facts %}
    <tr><th>{{ label }}</th>{% for v in values %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
    {% for split, metric, values in side.scores %}
    <tr><th>{{ split }} · {{ metric }}</th>{% for v in values %}<td class="num">{{ v|num }}</td>{% endfor %}</tr>
    {% endfor %}
  </table>
  {% if side.config %}<h3>Config differences</h3>
  <table>
    <tr><th>key</th>{% for view in runs %}<th>{{ view.run.name }}</th>{% endfor %}</tr>
    {% for key, values in side.config %}
    <tr><th><code>{{ key }}</code></th>{% for v in values %}<td><code>{{ v }}</code></td>{% endfor %}</tr>{% endfor %}
  </table>{% else %}<p>The runs' configs are the same.</p>{% endif %}
</section>
"""

RUN = r"""{% macro commands(todo) %}{% for c in todo %}<code>{{ c }}</code>{{ ", then " if not loop.last }}{% endfor %}
{%- endmacro %}
{% set run = view.run %}{% set p = view.prefix %}{% set ev = run.evaluation %}{% set cmp = ev.comparison %}
{% if side %}<h2 class="run-title" id="{{ p }}">{{ run.name }}</h2>{% endif %}
<section id="{{ p }}-summary">
  <p><span class="verdict {{ view.verdict_class }}">{{ cmp.verdict if cmp else "not compared" }}</span>
  run <b>{{ run.name }}</b> in <code>{{ run.where }}</code>, status <b>{{ run.status or "unknown" }}</b>
  {%- if cmp %}, against {{ cmp.reference }} ({{ cmp.reference_kind }}){% endif %}</p>
</section>

<section id="{{ p }}-training">
  <h2>Training and validation</h2>
  {% if view.training_svg %}<figure>{{ view.training_svg }}</figure>{% endif %}
  {% if run.training.recorded %}
  {% if run.training.best %}<p>Kept adapter: validation at step {{ run.training.best.step }} (epoch
    {{ run.training.best.epoch }}), best {{ run.training.select_metric }} {{ run.training.best.value|num }}.
    {% if run.training.stopped_early %}Stopped early at step {{ run.training.stopped_early.step }}:
    {{ run.training.stopped_early.reason }}.{% endif %}</p>
  {% elif not run.training.validation %}<p>No validation during training: the adapter of the last step was kept.</p>
  {% endif %}
  {% else %}<p class="missing">No training curves: {{ run.name }} has no loss history in its metrics.json
    (status {{ run.status or "unknown" }}).</p>{% endif %}
  {% if run.training.facts %}<table>{% for k, v in run.training.facts %}
    <tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</section>

<section id="{{ p }}-evaluation">
  <h2>Evaluation against the reference</h2>
  {% if cmp %}
  <p>{{ run.name }} against <b>{{ cmp.reference }}</b> ({{ cmp.reference_kind }}), example by example: delta =
    fine-tuned − reference, with its {{ ((1 - cmp.alpha) * 100)|round|int }}% paired bootstrap interval and p-value.
    The primary metric is <b>{{ cmp.primary_metric }}</b> on <b>{{ cmp.primary_split }}</b>.</p>
  {% if ev.stale %}<p class="missing">Evaluated again after this comparison ({{ ev.stale|join(", ") }}): the
    numbers below are the old ones; run {{ commands(ev.todo) }}.</p>{% endif %}
  <div class="eval-grid">
  {% if view.delta_svg %}<figure>{{ view.delta_svg }}</figure>{% endif %}
  <table>
    <tr><th>split</th><th>metric</th><th>fine-tuned</th><th>reference</th><th>delta</th><th>interval</th><th>p</th></tr>
    {% for r in cmp.rows %}
    <tr{% if r.split == cmp.primary_split and r.metric == cmp.primary_metric %} class="primary"{% endif %}>
      <td>{{ r.split }}</td><td>{{ r.metric }}</td><td class="num">{{ r.fine_tuned|num }}</td>
      <td class="num">{{ r.reference|num }}</td><td class="num {{ r|tone }}">{{ r.delta|signed }}</td>
      <td class="num">{% if r.low is not none %}[{{ r.low|signed }}, {{ r.high|signed }}]{% endif %}</td>
      <td class="num">{{ r.p|num }}</td></tr>{% endfor %}
  </table>
  </div>
  {% elif ev.evaluated %}
  <p class="missing">Evaluated but never compared with a reference: no deltas or intervals yet. Run
    {{ commands(ev.todo) }}.</p>
  <table><tr><th>split</th>{% for m in view.metrics %}<th>{{ m }}</th>{% endfor %}</tr>
    {% for split in ev.splits %}<tr><td>{{ split }}</td>
    {% for m in view.metrics %}<td class="num">{{ ev.scores[split].get(m)|num }}</td>{% endfor %}</tr>{% endfor %}
  </table>
  {% else %}
  <p class="missing">Not evaluated yet: there are no metrics for {{ run.name }} in <code>{{ data.metrics_dir }}</code>.
    Produce them with {{ commands(ev.todo) }}.</p>
  {% endif %}
</section>

<section id="{{ p }}-verdict">
  <h2>Verdict</h2>
  {% if cmp %}
  <p><span class="verdict {{ view.verdict_class }}">{{ cmp.verdict }}</span> against {{ cmp.reference }}</p>
  <ul>{% for reason in cmp.reasons %}<li>{{ reason }}</li>{% endfor %}
  {% for split, o in cmp.overlap.items() if o.near %}<li class="bad">leakage: {{ o.near }} of {{ o.n }} {{ split }}
    examples are also in the training data ({{ o.exact }} exactly)</li>{% endfor %}
  {% for split, produce in cmp.missing.items() %}<li>{{ cmp.reference }} has no metrics for split {{ split }};
    produce them with <code>{{ produce }}</code></li>{% endfor %}</ul>
  {% else %}<p class="missing">No verdict: {{ run.name }} was never compared with a reference
    (see <a href="#{{ p }}-evaluation">evaluation</a> for the commands).</p>
  {% endif %}
</section>

<section id="{{ p }}-examples">
  <h2>Flips and predictions</h2>
  {% if cmp and cmp.flips %}
  <p>Flips by {{ cmp.primary_metric }}: examples the fine-tuned model got right and the reference got wrong
    (fixed), and the reverse (broken).</p>
  <table><tr><th>split</th><th>fixed</th><th>broken</th></tr>
    {% for split, flips in cmp.flips.items() %}<tr><td>{{ split }}</td><td class="num ok">{{ flips.fixed|length }}</td>
    <td class="num bad">{{ flips.broken|length }}</td></tr>{% endfor %}</table>
  {% for split, flips in cmp.flips.items() if flips.fixed or flips.broken %}
  <h3>{{ split }}: {{ flips.fixed|length }} fixed, {{ flips.broken|length }} broken</h3>
  {% for kind in ("fixed", "broken") %}{% if flips[kind] %}
  <table class="examples"><col><col><col><col>
    <tr><th>{{ kind }}: prompt</th><th>expected</th><th>fine-tuned</th><th>reference model</th></tr>
    {% for f in flips[kind][:flips_shown] %}<tr><td>{{ f.prompt|clip }}</td><td>{{ f.expected|clip }}</td>
      <td>{{ f.fine_tuned|clip }}</td><td>{{ f.reference|clip }}</td></tr>{% endfor %}
  </table>{% if flips[kind]|length > flips_shown %}<p>… and {{ flips[kind]|length - flips_shown }} more in
    <code>comparison.json</code>.</p>{% endif %}{% endif %}{% endfor %}
  {% endfor %}
  {% elif cmp %}<p>No flips: no split could be paired with the reference.</p>
  {% else %}<p class="missing">No flips: they come with a comparison.</p>{% endif %}
  {% if ev.evaluated %}
  {% for split in ev.splits %}{% set rows = ev.samples[split] %}
  <h3>{{ split }}: the first {{ rows|length }} of {{ ev.counts[split] }} predictions</h3>
  {% if rows %}<table class="examples"><col><col><col><col class="score">
    <tr><th>prompt</th><th>expected</th><th>prediction</th><th>{{ view.score_metric }}</th></tr>
    {% for row in rows %}{% set s = (row.scores or {}).get(view.score_metric) %}
    <tr><td>{{ row.prompt|clip }}</td><td>{{ row.reference|clip }}</td><td>{{ row.prediction|clip }}</td>
      <td class="num {{ 'ok' if s and s >= 1 else 'bad' if s == 0 else '' }}">{{ s|num }}</td></tr>{% endfor %}
  </table>{% else %}<p class="missing">The predictions of {{ split }} are missing; evaluate again.</p>{% endif %}
  {% endfor %}
  {% else %}<p class="missing">No predictions: the run was not evaluated yet.</p>{% endif %}
</section>

<section id="{{ p }}-lineage">
  <h2>Lineage</h2>
  <div class="columns lineage">
  {% for section, rows in run.lineage.items() if rows %}
  <div{% if section == "data" %} class="wide"{% endif %}><h3>{{ section }}</h3><table>
    {%- for k, v in rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}
  </table></div>{% endfor %}
  </div>
  <details><summary>config used (<code>config_used.yaml</code>, secrets redacted)</summary>
  <pre>{{ run.config|yaml }}</pre></details>
</section>
"""


def render(data: ReportData) -> str:
    """The whole page for one run, or for several side by side."""
    env = _environment()
    views = [_run_view(run, i) for i, run in enumerate(data.runs, 1)]
    side = _side_view(data.runs) if len(data.runs) > 1 else None
    title = f"loraops report: {data.runs[0].name}" if side is None else f"loraops report: {len(data.runs)} runs"
    return env.get_template("page").render(
        data=data, runs=views, side=side, title=title, css=CSS, version=__version__, flips_shown=FLIPS_SHOWN
    )


def _environment() -> jinja2.Environment:
    loader = jinja2.DictLoader({"page": TEMPLATE, "side": SIDE, "run": RUN})
    env = jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(num=_num, signed=_signed, clip=_clip, tone=_tone, yaml=_yaml)
    return env


def _run_view(run: RunReport, index: int) -> dict[str, Any]:
    cmp = run.evaluation.comparison
    training = plots.training_svg([(run.name, run.training)], f"training-{index}")
    delta = plots.delta_svg(cmp["rows"], cmp["primary_metric"], f"delta-{index}") if cmp else None
    metrics = list(dict.fromkeys(m for scores in run.evaluation.scores.values() for m in scores))
    return {
        "run": run,
        "prefix": f"r{index}",
        "verdict_class": (cmp["verdict"] if cmp else "NONE").replace(" ", "-"),
        "training_svg": _safe(training),
        "delta_svg": _safe(delta),
        "metrics": metrics,
        "score_metric": cmp["primary_metric"] if cmp else "exact_match",
    }


def _side_view(runs: list[RunReport]) -> dict[str, Any]:
    metric = next((r.evaluation.comparison["primary_metric"] for r in runs if r.evaluation.comparison), "exact_match")
    return {
        "training_svg": _safe(plots.training_svg([(r.name, r.training) for r in runs], "training-all")),
        "scores_svg": _safe(plots.scores_svg(runs, metric, "scores-all")),
        "metric": metric,
        "facts": _side_facts(runs),
        "scores": score_table(runs),
        "config": config_differences(runs),
    }


def _side_facts(runs: list[RunReport]) -> list[tuple[str, list[str]]]:
    def fact(run: RunReport, label: str) -> str:
        return dict(run.training.facts).get(label, "—")

    def verdict(run: RunReport) -> str:
        cmp = run.evaluation.comparison
        return f"{cmp['verdict']} vs {cmp['reference']}" if cmp else "not compared"

    def best(run: RunReport) -> str:
        b = run.training.best
        return f"{run.training.select_metric} {_num(b['value'])} at step {b['step']}" if b else "—"

    return [
        ("status", [r.status or "unknown" for r in runs]),
        ("verdict", [verdict(r) for r in runs]),
        ("optimizer steps", [fact(r, "optimizer steps") for r in runs]),
        ("training loss", [fact(r, "training loss, first → last log") for r in runs]),
        ("best validation", [best(r) for r in runs]),
        ("git commit", [_short(dict(r.lineage["model and code"]).get("git commit")) for r in runs]),
        ("dataset sha256", [_short(dict(r.lineage["data"]).get("dataset sha256")) for r in runs]),
    ]


def _short(value: str | None) -> str:
    """A commit or hash cut to 12 characters, what it says after it kept (`(uncommitted changes)`)."""
    if not value:
        return "—"
    head, _, tail = value.partition(" ")
    return f"{head[:12]} {tail}".strip() if re.fullmatch(r"[0-9a-f]{13,}", head) else value


def _safe(svg: str | None) -> Markup | None:
    return None if svg is None else Markup(svg)  # drawn by matplotlib from numbers; its text is escaped there


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.4g}"


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= CLIP else text[:CLIP] + f"… ({len(text) - CLIP} more characters)"


def _tone(row: dict[str, Any]) -> str:
    low, high = row.get("low"), row.get("high")
    return "" if low is None or high is None else "ok" if low > 0 else "bad" if high < 0 else ""


def _yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)

"""Training curves and the evaluation table, for the Snakemake report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt

from amber_repro.provenance.run_context import write_job_record
from amber_repro.storage import atomic_write_text, read_json


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plot_curves(metrics: Path, keys: list[str], title: str, out: Path) -> None:
    """One panel per metric against the optimizer step; held-out points (eval/...) overlaid."""
    rows = read_metrics(metrics)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        train = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        held_out = [
            (r["step"], r[f"eval/{key}"])
            for r in rows
            if isinstance(r.get(f"eval/{key}"), (int, float))
        ]
        if train:
            axis.plot(*zip(*train, strict=True), label="train", linewidth=1)
        if held_out:
            axis.plot(*zip(*held_out, strict=True), "o-", label="held-out", markersize=3)
        axis.set_title(key)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


# The table's columns: the likelihood tasks' accuracies, and GSM8K's exact match of the answer
# after "####" (lm-eval's strict-match filter, the leaderboard's).
TABLE_METRICS = ("acc", "acc_norm", "exact_match/strict-match")
# autoescape: every value rendered into the page is HTML-escaped.
_TEMPLATES = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
EVAL_TABLE = _TEMPLATES.from_string("""\
<html><body>
<table>
<tr><th>model</th><th>task</th><th>shots</th>{% for metric in metrics %}<th>{{ metric }}</th>\
{% endfor %}</tr>
{% for row in rows %}
<tr><td>{{ row.model }}</td><td>{{ row.task }}</td><td>{{ row.shots }}</td>
{%- for value, stderr in row.cells -%}
<td>{% if value %}{{ value }} &plusmn; {{ stderr }}{% endif %}</td>
{%- endfor %}</tr>
{% endfor %}
</table>
{% if harmless %}
<table>
<tr><th>model</th><th>harmless_rate</th><th>{{ confidence }} interval</th><th>safe / answers</th>\
<th>empty answers</th></tr>
{% for row in harmless %}
<tr><td>{{ row.model }}</td><td>{{ row.value }}</td><td>{{ row.interval }}</td>\
<td>{{ row.counts }}</td><td>{{ row.empty }}</td></tr>
{% endfor %}
</table>
<p>Judge: {{ judge }}</p>
{% endif %}
{% if rewards %}
<p>DPO implicit rewards on the held-out pairs: {{ rewards | join(", ") }}</p>
{% endif %}
</body></html>
""")


def stderr_key(metric: str) -> str:
    """The key of a metric's standard error: acc -> acc_stderr, exact_match/strict-match ->
    exact_match_stderr/strict-match (evaluation.metric_name keeps lm-eval's filter last)."""
    name, slash, kind = metric.partition("/")
    return f"{name}_stderr{slash}{kind}"


def eval_table(eval_json: Path, out: Path) -> None:
    """eval.json as an HTML table: one row per (model, task), accuracy with its stderr.

    Model and task names come from the config: the template escapes them (and every other value)."""
    report = read_json(eval_json)
    rows = []
    for model, entry in report["models"].items():
        for task, scores in entry["tasks"].items():
            cells = [
                (f"{scores[m]:.4f}", f"{scores.get(stderr_key(m), 0):.4f}")
                if m in scores
                else ("", "")
                for m in TABLE_METRICS
            ]
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "shots": scores.get("num_fewshot", ""),
                    "cells": cells,
                }
            )
    rewards = [
        f"{k} {v:.4f}"
        for k, v in (report.get("dpo_rewards") or {}).items()
        if k.startswith("rewards/")
    ]
    harmless, confidence, judge = harmless_rows(report)
    atomic_write_text(
        out,
        EVAL_TABLE.render(
            rows=rows,
            metrics=TABLE_METRICS,
            rewards=rewards,
            harmless=harmless,
            confidence=confidence,
            judge=judge,
        ),
    )


def harmless_rows(report: dict) -> tuple[list[dict], str, str]:
    """One row per model with a harmless_rate; the interval's level; the judge in words."""
    rows = [
        {
            "model": model,
            "value": f"{rate['value']:.3f}",
            "interval": f"[{rate['ci_low']:.3f}, {rate['ci_high']:.3f}]",
            "counts": f"{rate['safe']} / {rate['total']}",
            "empty": rate["empty"],
        }
        for model, entry in report["models"].items()
        if (rate := entry.get("harmless_rate"))
    ]
    safety = report.get("safety") or {}
    judge = safety.get("judge") or {}
    if judge.get("kind") == "classifier":
        words = (
            f"classifier trained on the training split's labels, held-out accuracy "
            f"{judge['heldout_accuracy']:.3f} on {judge['heldout_examples']} responses"
        )
    else:
        words = f"{judge.get('model')} at {judge.get('commit') or judge.get('revision')}"
    return rows, f"{100 * safety.get('confidence', 0.95):g}%", words


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sft-metrics", type=Path, required=True)
    parser.add_argument("--dpo-metrics", type=Path, required=True)
    parser.add_argument("--eval-json", type=Path, required=True)
    parser.add_argument("--sft-plot", type=Path, required=True)
    parser.add_argument("--dpo-plot", type=Path, required=True)
    parser.add_argument("--eval-table", type=Path, required=True)
    parser.add_argument("--record", type=Path, help="where to write the job's record (JSON)")


def main(args: argparse.Namespace) -> None:
    plot_curves(args.sft_metrics, ["loss"], "SFT", args.sft_plot)
    plot_curves(
        args.dpo_metrics, ["loss", "rewards/accuracies", "rewards/margins"], "DPO", args.dpo_plot
    )
    eval_table(args.eval_json, args.eval_table)
    if args.record:
        write_job_record(args.record)
    print(f"wrote {args.sft_plot}, {args.dpo_plot}, {args.eval_table}")

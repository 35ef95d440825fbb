"""Training curves and the evaluation table, for the Snakemake report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from amber_repro.provenance import atomic_write_text, read_json  # noqa: E402


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plot_curves(metrics: Path, keys: list[str], title: str, out: Path) -> None:
    """One panel per metric against the optimizer step; held-out points (eval/...) overlaid."""
    rows = read_metrics(metrics)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        train = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        held_out = [(r["step"], r[f"eval/{key}"]) for r in rows if isinstance(r.get(f"eval/{key}"), (int, float))]
        if train:
            axis.plot(*zip(*train), label="train", linewidth=1)
        if held_out:
            axis.plot(*zip(*held_out), "o-", label="held-out", markersize=3)
        axis.set_title(key)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def eval_table(eval_json: Path, out: Path) -> None:
    """eval.json as an HTML table: one row per (model, task), accuracy with its stderr."""
    report = read_json(eval_json)
    rows = ["<table>", "<tr><th>model</th><th>task</th><th>shots</th><th>acc</th><th>acc_norm</th></tr>"]
    for model, entry in report["models"].items():
        for task, scores in entry["tasks"].items():
            cells = [f"{scores[m]:.4f} &plusmn; {scores.get(m + '_stderr', 0):.4f}" if m in scores else "" for m in ("acc", "acc_norm")]
            rows.append(f"<tr><td>{model}</td><td>{task}</td><td>{scores.get('num_fewshot', '')}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    rows.append("</table>")
    rewards = report.get("dpo_rewards")
    if rewards:
        rows.append("<p>DPO implicit rewards on the held-out pairs: " + ", ".join(
            f"{k} {v:.4f}" for k, v in rewards.items() if k.startswith("rewards/")) + "</p>")
    atomic_write_text(out, "<html><body>\n" + "\n".join(rows) + "\n</body></html>\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sft-metrics", type=Path, required=True)
    parser.add_argument("--dpo-metrics", type=Path, required=True)
    parser.add_argument("--eval-json", type=Path, required=True)
    parser.add_argument("--sft-plot", type=Path, required=True)
    parser.add_argument("--dpo-plot", type=Path, required=True)
    parser.add_argument("--eval-table", type=Path, required=True)


def main(args: argparse.Namespace) -> None:
    plot_curves(args.sft_metrics, ["loss"], "SFT", args.sft_plot)
    plot_curves(args.dpo_metrics, ["loss", "rewards/accuracies", "rewards/margins"], "DPO", args.dpo_plot)
    eval_table(args.eval_json, args.eval_table)
    print(f"wrote {args.sft_plot}, {args.dpo_plot}, {args.eval_table}")

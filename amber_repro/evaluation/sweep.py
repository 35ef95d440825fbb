"""One comparison of named experiments: a table (sweep.json) and a plot for the report.

Every experiment is a DPO run (and its evaluation) from the same data, SFT checkpoint and reference
log-probs; only its `dpo` / `eval` settings differ. A row holds what the experiment changed, its
held-out results and its training time, read from the experiment's eval.json and the DPO
checkpoint's own record (amber_repro.json), never from the config: the table shows what ran.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt

from amber_repro.errors import DataError
from amber_repro.storage import atomic_path, read_json, write_json

DEFAULT = "default"
# The DPO settings a sweep varies; the table shows every setting that differs from the default's.
REWARD_KEYS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
PLOTTED = (
    ("held-out reward accuracy", "rewards/accuracies"),
    ("held-out reward margin", "rewards/margins"),
)


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what})")
    return read_json(path)


def experiment_row(name: str, eval_json: Path, dpo_dir: Path) -> dict:
    """One experiment's settings, held-out results and training time."""
    report = _read(eval_json, f"experiment {name}'s evaluation")
    record = _read(dpo_dir / "amber_repro.json", f"experiment {name}'s DPO record")
    dpo_model = report["config"].get("dpo_model", "dpo")
    tasks = report["models"].get(dpo_model, {}).get("tasks", {})
    rewards = report.get("dpo_rewards") or {}
    return {
        "name": name,
        "settings": record["settings"],
        "results": {
            **{key: rewards.get(key) for key in REWARD_KEYS},
            **{
                f"{task}/{metric}": scores[metric]
                for task, scores in sorted(tasks.items())
                for metric in ("acc", "acc_norm")
                if metric in scores
            },
        },
        "train_seconds": record["speed"]["seconds"],
        "train_tokens_per_second": record["speed"]["tokens_per_second"],
    }


def changed_settings(rows: list[dict]) -> list[str]:
    """The settings that differ between any two experiments, sorted: the sweep's axes."""
    keys = sorted({key for row in rows for key in row["settings"]})
    return [key for key in keys if len({repr(row["settings"].get(key)) for row in rows}) > 1]


def sweep_table(rows: list[dict]) -> dict:
    """The comparison: each row keeps only the settings that vary, in `changed`."""
    axes = changed_settings(rows)
    return {
        "axes": axes,
        "experiments": [
            {**row, "changed": {key: row["settings"].get(key) for key in axes}} for row in rows
        ],
    }


def plot_sweep(table: dict, out: Path) -> None:
    """One bar panel per held-out metric (rewards, each task's acc), one bar per experiment."""
    rows = table["experiments"]
    names = [row["name"] for row in rows]
    task_accuracies = [key for key in rows[0]["results"] if key.endswith("/acc")]
    panels = [*PLOTTED, *((key, key) for key in task_accuracies)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, key) in zip(axes[0], panels, strict=True):
        axis.bar(names, [row["results"].get(key) or 0.0 for row in rows])
        axis.set_title(title)
        axis.tick_params(axis="x", labelrotation=30)
        axis.grid(alpha=0.3, axis="y")
    fig.suptitle("experiments: " + (", ".join(table["axes"]) or "no setting differs"))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "EVAL_JSON", "DPO_DIR"),
        help="an experiment's name, eval.json and DPO checkpoint (repeat per experiment)",
    )
    parser.add_argument("--out", type=Path, required=True, help="sweep.json")
    parser.add_argument("--plot", type=Path, required=True, help="the comparison plot (.png)")


def main(args: argparse.Namespace) -> None:
    names = [name for name, _, _ in args.experiment]
    if len(set(names)) != len(names):
        raise DataError(f"--experiment: a name is given twice ({', '.join(names)})")
    rows = [experiment_row(name, Path(e), Path(d)) for name, e, d in args.experiment]
    table = sweep_table(rows)
    write_json(args.out, table)
    plot_sweep(table, args.plot)
    print(f"sweep: {len(rows)} experiment(s), varying {', '.join(table['axes']) or 'nothing'}")

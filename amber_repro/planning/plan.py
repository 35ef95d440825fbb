"""`python -m amber_repro plan --configfile=FILE`: what each job of a run will cost, before the
first submission.

One row per job the run submits (one per evaluated model): its model's parameters, the tokens it
processes, its FLOPs (costs.py's conventions), its memory per GPU, the GPU-hours and wall time on a
named GPU type at a stated utilisation, and its time limit (`resources.<rule>.runtime_min`). It
exits 1 when a job that cannot resume is estimated past its limit, or past its memory; a resumable
job past its limit is a warning with the retries it needs (the slurm profile's `retries`), and an
error when it needs more. The config is resolved as the workflow resolves it: config/config.yaml,
then each --configfile in order.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import yaml

from amber_repro.config.jobs import SIGTERM_WARNING_SECONDS, job
from amber_repro.config.load import read_yaml, resolve
from amber_repro.config.types import merge
from amber_repro.errors import AmberError, ConfigError
from amber_repro.planning import costs
from amber_repro.planning.context import Context, Row
from amber_repro.planning.estimates import JOB_ESTIMATES
from amber_repro.planning.workloads import assumed_pairs, measured_pairs

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm" / "config.v8+.yaml"


class PlanFailed(AmberError):
    exit_code = 1


def verdict(row: Row, gpu: costs.GPU, retries: int) -> tuple[str, bool]:
    """(what the row's last column says, whether the run cannot go as configured)."""
    if row.gpus and row.memory_gb > gpu.memory_gb:
        return f"OUT OF MEMORY ({row.memory_gb:.0f} of {gpu.memory_gb:.0f} GB)", True
    if not row.gpus and row.memory_gb * 1000 > row.node_memory_mb:
        return f"OUT OF MEMORY (over resources.{row.rule}.mem_mb {row.node_memory_mb})", True
    limit = row.limit_min * 60
    if row.seconds <= limit:
        return "ok", False
    if not job(row.rule).resumable:
        return "PAST ITS LIMIT (cannot resume)", True
    # Each retry resumes from the checkpoint saved at the SIGTERM warning before the limit.
    needed = math.ceil(row.seconds / (limit - SIGTERM_WARNING_SECONDS)) - 1
    if needed > retries:
        return f"PAST ITS LIMIT ({needed} retries needed, the profile allows {retries})", True
    return f"warning: needs {needed} retr{'y' if needed == 1 else 'ies'}", False


def human_count(params: float) -> str:
    if not params:
        return "-"
    return f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M"


def human_time(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table(rows: list[Row], gpu: costs.GPU, retries: int, markdown: bool) -> tuple[str, bool]:
    header = [
        "job",
        "GPUs",
        "params",
        "tokens",
        "PFLOP",
        "compute",
        "memory GB",
        "GPU-h",
        "wall",
        "limit",
        "verdict",
    ]
    lines, failed = [], False
    for row in rows:
        said, bad = verdict(row, gpu, retries)
        failed |= bad
        lines.append(
            [
                row.job,
                str(row.gpus),
                human_count(row.params),
                f"{row.tokens / 1e6:.1f}M" if row.tokens else "-",
                f"{row.flops / 1e15:,.0f}" if row.flops else "-",
                row.precision,
                f"{row.memory_gb:.0f}",
                f"{row.gpu_hours:.1f}",
                human_time(row.seconds),
                human_time(row.limit_min * 60),
                said,
            ]
        )
    if markdown:
        text = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        text += [f"| {' | '.join(line)} |" for line in lines]
        return "\n".join(text), failed
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    text = [
        "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True))
        for line in [header, *lines]
    ]
    return "\n".join(text), failed


def read_config(configfiles: list[Path], presets: Path):
    """config/config.yaml, then each --configfile, resolved and validated as the workflow does."""
    values: dict = {}
    for path in [REPO / "config" / "config.yaml", *configfiles]:
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        values = merge(values, read_yaml(path) or {})  # a syntax error: one line, not a traceback
    return resolve(values, presets)


def profile_retries() -> int:
    return int(yaml.safe_load(PROFILE.read_text()).get("retries", 0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile",
        type=Path,
        action="append",
        default=[],
        help="a config overlay, as given to snakemake (repeatable, in order)",
    )
    parser.add_argument("--gpu", choices=sorted(costs.GPUS), default="a100-80gb")
    parser.add_argument("--results", type=Path, default=Path("results"), help="measured data")
    parser.add_argument("--presets", type=Path, default=REPO / "config" / "presets")
    parser.add_argument("--markdown", action="store_true", help="the table for docs/cluster.md")


def main(args: argparse.Namespace) -> None:
    settings = read_config(args.configfile, args.presets)
    gpu = costs.GPUS[args.gpu]
    data_dir = args.results / "ambersafe" / "data"
    pairs = measured_pairs(data_dir, args.results / "base_model") or assumed_pairs(settings)
    context = Context(settings, pairs, gpu)
    rows = [row for estimate in JOB_ESTIMATES for row in estimate(context)]
    retries = profile_retries()
    text, failed = table(rows, gpu, retries, args.markdown)
    print(text)
    print()
    for line in context.assumptions(retries):
        print(f"- {line}" if args.markdown else line)
    if failed:
        raise PlanFailed("plan: at least one job cannot finish as configured (see its verdict)")

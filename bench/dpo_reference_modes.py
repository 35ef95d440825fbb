"""DPO throughput and peak memory: stored reference log-probs against a live reference model.

    python bench/dpo_reference_modes.py [--steps 60] [--workdir bench/out]

Builds the embedded default's inputs up to the reference log-probs with Snakemake (in --workdir),
then runs the same DPO (config/config.yaml's dpo settings, same data, same steps) twice, each in its
own process: once reading the stored log-probs, once with a frozen reference model in the loop.
Prints tokens/s (policy tokens, chosen + rejected) and peak memory (max RSS on CPU, max allocated
on GPU) for both, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from amber_repro.config.cli import settings_flags
from amber_repro.config.load import resolve
from amber_repro.config.schema import Config

REPO = Path(__file__).resolve().parents[1]


def build_inputs(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", workdir / "config", dirs_exist_ok=True)
    targets = [f"results/ambersafe/ref_logps/{split}.parquet" for split in ("train", "test")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "2",
            *targets,
        ],
        check=True,
        env=env,
        capture_output=True,
    )


def run_dpo(workdir: Path, mode: str, steps: int, config: Config) -> dict:
    results, out = workdir / "results", workdir / f"dpo-{mode}"
    data = results / "ambersafe/data"
    dpo = config.dpo.model_copy(update={"checkpoint_every": steps + 1, "eval_every": steps + 1})
    command = [
        sys.executable,
        "-m",
        "amber_repro",
        "dpo",
        "--model",
        str(results / "ambersafe/sft"),
        "--pairs",
        str(data / "pairs-train.parquet"),
        "--ref-logps",
        str(results / "ambersafe/ref_logps/train.parquet"),
        "--eval-pairs",
        str(data / "pairs-test.parquet"),
        "--eval-ref-logps",
        str(results / "ambersafe/ref_logps/test.parquet"),
        "--out-dir",
        str(out),
        "--state-dir",
        str(workdir / f"state-{mode}"),
        "--max-steps",
        str(steps),
        "--reference-mode",
        mode,
        "--reference-precision",
        config.reference.precision,
        *shlex.split(settings_flags(dpo)),
        *shlex.split(settings_flags(config.tokenization)),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((out / "amber_repro.json").read_text())["speed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    build_inputs(args.workdir)
    raw = yaml.safe_load((args.workdir / "config" / "config.yaml").read_text())
    config = resolve(raw, REPO / "config" / "presets")
    speeds = {
        mode: run_dpo(args.workdir, mode, args.steps, config) for mode in ("precomputed", "live")
    }
    for mode, speed in speeds.items():
        print(
            f"{mode:>11}: {speed['tokens_per_second']:,.0f} tokens/s, peak memory "
            f"{speed['peak_memory_bytes'] / 2**20:,.0f} MiB "
            f"({speed['tokens']:,} tokens in {speed['seconds']:.1f} s)"
        )
    pre, live = speeds["precomputed"], speeds["live"]
    print(
        "precomputed / live: "
        f"{pre['tokens_per_second'] / live['tokens_per_second']:.2f}x tokens/s, "
        f"{pre['peak_memory_bytes'] / live['peak_memory_bytes']:.2f}x peak memory"
    )


if __name__ == "__main__":
    main()

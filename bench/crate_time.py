"""Time the provenance crate (`python -m amber_repro crate`) on a finished run.

    python bench/crate_time.py [RUN_DIR] [--repeats 3] [--out PATH]

RUN_DIR is a working directory whose results/ a finished run filled (default: the current one). The
command is the `provenance` rule's own, as a Snakemake dry run prints it, with --out pointed at a
temporary file (or PATH), so the run's crate is left as it was. Prints the seconds of each build
(the goal: under 2 s on the embedded default).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def crate_command(run_dir: Path) -> list[str]:
    """The provenance job's command line for this run (jobs table and config included)."""
    snakefile = run_dir / "Snakefile" if (run_dir / "Snakefile").is_file() else REPO / "Snakefile"
    dry_run = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    dry_run += ["--directory", str(run_dir), "--cores", "1", "-n", "-p"]
    dry_run += ["--forcerun", "provenance", "results/ro-crate-metadata.json"]
    printed = subprocess.run(dry_run, capture_output=True, text=True, cwd=run_dir, check=True)
    line = next(line for line in printed.stdout.splitlines() if "-m amber_repro crate" in line)
    command = shlex.split(line[line.index("python") :])
    return [sys.executable, *command[1 : command.index(">")]]  # without the log redirection


def with_out(command: list[str], out: Path) -> list[str]:
    command = list(command)
    command[command.index("--out") + 1] = str(out)
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=Path.cwd())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="keep the last crate here")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    command = crate_command(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out.resolve() if args.out else Path(tmp) / "ro-crate-metadata.json"
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(with_out(command, out), cwd=run_dir, check=True, capture_output=True)
            print(f"crate built in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()

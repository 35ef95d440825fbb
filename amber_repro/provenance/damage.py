"""`python -m amber_repro verify [RESULTS]`: every output of a finished run against the crate.

Snakemake judges an output folder by its timestamp, so a file deleted or overwritten inside one goes
unnoticed. This stage reads RESULTS/ro-crate-metadata.json (provenance/verify.py's Crate) and checks
every file it lists, the job that made it and its size and sha256 (model_files.problem): one line
per damaged or missing file with the rule that makes it, then a summary with the command that
rebuilds them; exit status 1 when anything is damaged, 0 otherwise, 2 without a readable crate.

Records holding timings (amber_repro.json, model cards, TensorBoard files) are compared by hash too:
unlike a replay's files (provenance/verify.py's `comparison`), these are the very bytes the crate
hashed at the end of the same run. A job rerun after the crate was written (`snakemake TARGET`
without the crate among the targets) shows as changed until `snakemake` rewrites the crate.
Hashing reads every byte (about 0.8 s per GB, model_files.py); --sizes-only compares sizes only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from amber_repro.provenance.model_files import DamagedOutputError, problem, snakemake_target
from amber_repro.provenance.verify import CRATE_NAME, Crate, Job, VerifyError


@dataclass
class Damage:
    file: str  # relative to the results folder, as the crate names it
    problem: str
    job: Job

    @property
    def made_by(self) -> str:
        job = f" (job {self.job.name})" if self.job.name != self.job.rule else ""
        return f"rule {self.job.rule}{job}"

    @property
    def target(self) -> str:
        """What to rebuild: the job's output folder holding the file, or the file itself."""
        for folder in self.job.folders:  # the crate's Datasets among the job's results
            if self.file.startswith(folder):
                return folder.rstrip("/")
        return self.file


def damaged_outputs(results: Path, crate: Crate, hashes: bool = True) -> tuple[list[Damage], int]:
    """The crate's files that are missing or differ from it, and how many it lists."""
    damaged, checked = [], 0
    for job in crate.jobs:
        for file_id in job.results:
            checked += 1
            entity = crate.entities.get(file_id, {})
            expected = {"sha256": entity.get("sha256"), "bytes": entity.get("contentSize")}
            if what := problem(results / file_id, expected, hashes):
                damaged.append(Damage(file_id, what, job))
    return damaged, checked


def summary(results: Path, damaged: list[Damage], checked: int) -> str:
    rules = list(dict.fromkeys(d.job.rule for d in damaged))
    targets = " ".join(dict.fromkeys(snakemake_target(results / d.target) for d in damaged))
    return (
        f"{len(damaged)} of {checked} outputs damaged or missing (rules {', '.join(rules)}); "
        f"rebuild them: snakemake --cores N --force {targets}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        nargs="?",
        type=Path,
        default=Path("results"),
        help="a finished run's results folder, holding ro-crate-metadata.json (default: results)",
    )
    parser.add_argument(
        "--sizes-only",
        action="store_true",
        help="compare sizes, not sha256: a stat per file instead of reading every byte",
    )


def main(args: argparse.Namespace) -> None:
    crate_path = args.results / CRATE_NAME
    if not crate_path.is_file():
        raise VerifyError(
            f"{crate_path}: no such file; a finished `snakemake` run writes it (rule provenance)"
        )
    crate = Crate(crate_path)
    damaged, checked = damaged_outputs(args.results, crate, hashes=not args.sizes_only)
    for damage in damaged:
        print(f"{args.results / damage.file}: {damage.problem}; made by {damage.made_by}")
    if damaged:
        raise DamagedOutputError(summary(args.results, damaged, checked))
    what = "size" if args.sizes_only else "size and sha256"
    print(f"{checked} outputs listed in {crate_path}: every one present, {what} as recorded")

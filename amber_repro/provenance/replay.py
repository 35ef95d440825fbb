"""`python -m amber_repro reproduce`: rerun an archived run (amber_repro/provenance/archive.py)
from its bundle in a fresh folder, offline, and check every result against the run's crate.

  1. unpack into DIR (which must be empty); refuse a BUNDLE.json edited since the bundle was made
     and any path that leads outside DIR (bundle_checks.py); check the members against BUNDLE.json
     (a changed member is reported, and the replay goes on: the verification says where it
     matters);
  2. make DIR/code a git checkout of the archived commit (its files plus code.commit make the same
     commit hash only when they are the commit's files; the stages then record that commit), and
     apply code.diff when there is one;
  3. install: reuse an environment (--venv/--python), or a new DIR/code/.venv from the bundled
     wheels (no index), or `make` in DIR/code (from the index);
  4. restore the fetched inputs (raw data, a hub base model, lm-eval datasets, the image) into
     DIR/code/results, newer than the code so that Snakemake keeps them;
  5. run the DAG job by job in the crate's order with config/run.yaml and the hub switched off
     (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE), each job's outputs as targets, and
     verify them at once (amber_repro/provenance/verify.py): the first artifact that differs
     ends the replay (exit 1), unless --tolerance is given, which compares numbers instead and goes
     on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import yaml

from amber_repro.config.jobs import BY_RULE
from amber_repro.errors import AmberError
from amber_repro.provenance.archive import RESTORED_RULES
from amber_repro.provenance.bundle_checks import MANIFEST, check_manifest, restore_plan
from amber_repro.provenance.git_tree import git
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.replay_install import (
    ReplayError,
    environment,
    install,
    run_logged,
    say,
)
from amber_repro.provenance.tolerance import Tolerances, compare_tolerant, judge_by_inputs
from amber_repro.provenance.verify import (
    CRATE_NAME,
    SNAKEMAKE_BOOKKEEPING,
    Crate,
    Row,
    compare_exact,
    format_table,
    is_record,
)


class Diverged(AmberError):
    exit_code = 1


# --- unpacking ------------------------------------------------------------------------------------


def unpack(archive: Path, target: Path) -> dict:
    """Unpack into the new folder; BUNDLE.json, once checked (bundle_checks.py)."""
    if target.exists() and not target.is_dir():
        raise ReplayError(f"{target} is a file, not a folder: give a new folder")
    if target.exists() and any(target.iterdir()):
        raise ReplayError(f"{target} is not empty: give a new folder")
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    except (OSError, tarfile.TarError) as error:
        raise ReplayError(f"{archive}: cannot unpack ({error})") from None
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        raise ReplayError(f"{archive}: no {MANIFEST}; not an amber-repro bundle") from None
    check_manifest(manifest, archive)
    restore_plan(target, manifest)
    return manifest


def changed_members(target: Path, manifest: dict) -> list[str]:
    """Members whose bytes are not those BUNDLE.json lists (or that it does not list)."""
    listed = manifest.get("members", {})
    found = {
        path.relative_to(target).as_posix()
        for path in target.rglob("*")
        if path.is_file() or path.is_symlink()
    } - {MANIFEST}
    changed = sorted(found - set(listed))
    for name, digest in sorted(listed.items()):
        path = target / name
        if path.is_symlink():
            found_digest = hashlib.sha256(os.readlink(path).encode()).hexdigest()
        else:
            found_digest = sha256_file(path) if path.is_file() else None
        if found_digest != digest:
            changed.append(name)
    return changed


def check_out(target: Path, manifest: dict, changed: list[str]) -> tuple[list[str], bool]:
    """Make code/ a git checkout of the archived commit, with no history: its files are added,
    their tree must be the one code.commit names, and code.commit hashed gives the commit back.
    Then code.diff is applied. Returns warnings, and whether the stages must be told the commit
    (no git here, code/ as archived)."""
    code, warnings, commit = target / "code", [], manifest["commit"]
    if shutil.which("git") is None:
        if (target / "code.diff").is_file():
            raise ReplayError(
                "the bundle holds uncommitted changes (code.diff): applying needs git"
            )
        if any(name.startswith("code/") for name in changed):
            return ["warning: no git, and code/ changed: the stages record no commit"], False
        return ["note: no git: the stages are told the archived commit (code/ as archived)"], True
    git(code, "init", "-q")
    git(code, "add", "--all", "--force")  # every archived file, whatever .gitignore says
    tree = git(code, "write-tree").decode().strip()
    raw = target / "code.commit"
    if not raw.is_file() or not raw.read_bytes().startswith(f"tree {tree}\n".encode()):
        changed_code = [name for name in changed if name.startswith("code/")]
        return [
            f"warning: code/ is not commit {commit[:12]} (changed: {changed_code[:10]}): the "
            "stages record no commit"
        ], False
    made = git(code, "hash-object", "-t", "commit", "-w", str(raw)).decode().strip()
    if made != commit:
        return [f"warning: code.commit is not commit {commit[:12]}: no commit recorded"], False
    (code / ".git" / "shallow").write_text(f"{commit}\n")  # its parents are not here
    git(code, "update-ref", "HEAD", commit)
    if (target / "code.diff").is_file():
        git(code, "apply", "--binary", str((target / "code.diff").resolve()))
    return warnings, False


def restore(target: Path, manifest: dict) -> list[str]:
    """Move the fetched inputs into code/ and make them newer than every code file. Each path is
    checked again here, after the checkout (a code.diff may have made symlinks)."""
    moved = []
    for (member, path), (source, destination) in zip(
        manifest["restore"].items(), restore_plan(target, manifest), strict=True
    ):
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            source.replace(destination)
        except OSError as error:
            raise ReplayError(f"cannot restore {member} as code/{path}: {error}") from None
        moved.append((path, destination))
    now = time.time()
    for _, destination in moved:
        os.utime(destination, (now, now), follow_symlinks=False)
    return [path for path, _ in moved]


# --- the DAG, job by job --------------------------------------------------------------------------


class Snakemake:
    def __init__(self, python: Path, target: Path, env: dict, cores: int, apptainer: bool):
        self.code, self.env, self.logs = target / "code", env, target / "replay-logs"
        self.command = [str(python), "-m", "snakemake", "--cores", str(cores)]
        self.command.append(f"--configfile={(target / 'config' / 'run.yaml').resolve()}")
        if apptainer:
            self.command += ["--software-deployment-method", "apptainer"]

    def run(self, *args: str, log: str) -> int:
        return run_logged([*self.command, *args], self.logs / log, cwd=self.code, env=self.env)

    def outputs(self) -> list[str]:
        """Every output path of the DAG as Snakemake names it (a folder for a directory output)."""
        result = subprocess.run(
            [*self.command, "--summary"],
            cwd=self.code,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ReplayError(f"snakemake --summary failed:\n{result.stderr[-3000:]}")
        lines = result.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("output_file")), None)
        if start is None:
            raise ReplayError(f"snakemake --summary printed no table:\n{result.stdout[-2000:]}")
        return [line.split("\t")[0] for line in lines[start + 1 :] if "\t" in line]


def targets_of(files: list[str], outputs: list[str]) -> list[str]:
    """The Snakemake targets that make these files: the file, or the folder output holding it."""
    targets = []
    for path in files:
        folder = next((o for o in outputs if path.startswith(o.rstrip("/") + "/")), None)
        target = folder or path
        if target not in targets:
            targets.append(target)
    return targets


def verify_job(
    job, crate: Crate, target: Path, tolerances: Tolerances | None, made: list[str], before: list
) -> list:
    """One row per file the crate says the job made, and one per unexpected file beside them.
    With tolerances, presentation files are judged by the rows they are drawn from: the job's
    inputs (among `before`, the earlier jobs' rows) and its other results."""
    rows = []
    code_results, originals = target / "code" / "results", target / "results"
    label = job.name + (" (restored)" if job.rule in RESTORED_RULES else "")
    for file_id in job.results:
        got, original = code_results / file_id, originals / file_id
        row = compare_exact(file_id, label, crate.sha256(file_id), got, original)
        if tolerances is not None and not row.ok:
            row = compare_tolerant(row, got, original, tolerances)
        rows.append(row)
    if tolerances is not None:
        inputs = set(job.inputs)
        sources = [row for row in before if row.artifact in inputs] + rows
        rows = [judge_by_inputs(row, sources) for row in rows]
    expected = set(job.results)
    for folder in (target / "code" / t for t in made):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            file_id = path.relative_to(code_results).as_posix()
            if file_id in expected or is_record(file_id) or path.name in SNAKEMAKE_BOOKKEEPING:
                continue
            sha = sha256_file(path)
            rows.append(Row(file_id, label, None, sha, "NO (not in the crate)", False))
    return rows


def config_changes(expected: dict, replayed: dict, prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(expected) | set(replayed)):
        a, b = expected.get(key), replayed.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def use_apptainer(crate: Crate, manifest: dict) -> bool:
    """Whether to run the jobs in Apptainer as the run did: when its jobs ran in an image that is
    here (bundled, or a registry reference) and Apptainer is installed."""
    images = {job.container for job in crate.jobs if job.container}
    if not images:
        return False
    missing = [i for i in images if "://" not in i and i not in manifest["restore"].values()]
    if shutil.which("apptainer") is None or missing:
        why = "no apptainer here" if not missing else f"{missing[0]} is not bundled (WITH_IMAGE=1)"
        say(f"warning: the run's jobs ran in {', '.join(sorted(images))}, but {why}: on the host")
        return False
    return True


def replay(args: argparse.Namespace) -> list[Row]:
    target = Path(args.dir).absolute()
    say(f"unpacking {args.archive} into {target}")
    manifest = unpack(Path(args.archive), target)
    changed = changed_members(target, manifest)
    if changed:
        say(f"note: {len(changed)} member(s) differ from BUNDLE.json: {', '.join(changed[:10])}")
    warnings, claim = check_out(target, manifest, changed)
    for warning in warnings:
        say(warning)
    crate = Crate(target / "results" / CRATE_NAME)
    run_config = yaml.safe_load((target / "config" / "run.yaml").read_text())
    for change in config_changes(crate.config, run_config):
        say(f"note: config/run.yaml differs from the run's config: {change}")
    if sha256_file(target / "requirements.lock") != manifest.get("run", {}).get("lock_sha256"):
        say("note: requirements.lock differs from the lock the run recorded")
    python = install(args, target, manifest)
    env = environment(python, target, manifest, claim)
    restore(target, manifest)
    snakemake = Snakemake(python, target, env, args.cores, use_apptainer(crate, manifest))
    outputs = snakemake.outputs()

    rows: list[Row] = []
    for n, job in enumerate(crate.jobs, 1):
        made = targets_of([f"results/{f}" for f in job.results], outputs)
        if job.rule not in RESTORED_RULES:
            log = f"{job.name}.log"
            where = target / "replay-logs" / log
            say(f"[{n}/{len(crate.jobs)}] {job.name}: snakemake (log {where})")
            start = time.monotonic()
            if snakemake.run(*made, log=log) != 0:
                rows.append(Row("(the job)", job.name, None, None, "NO (snakemake failed)", False))
                raise_diverged(rows, job, where)
            say(f"    {time.monotonic() - start:.0f} s")
        rows += verify_job(job, crate, target, args.tolerance, made, rows)
        if args.tolerance is None and not all(row.ok for row in rows):
            raise_diverged(rows, job)
    if all(row.ok for row in rows):
        say("every artifact verified; writing the replay's own crate (snakemake, rule all)")
        snakemake.run(log="all.log")
    return rows


def raise_diverged(rows: list[Row], job, log: Path | None = None) -> None:
    print(format_table(rows))
    first = next(row for row in rows if not row.ok)
    stage = BY_RULE[job.rule].label if job.rule in BY_RULE else job.rule
    where = f" (see {log})" if log else ""
    raise Diverged(
        f"first divergence: {first.artifact}, made by job {job.name} ({stage}){where}: "
        f"{first.match}"
    )


def tolerance_argument(text: str) -> Tolerances:
    try:
        return Tolerances.parse(text)
    except AmberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", type=Path, required=True, help="a bundle from `archive`")
    parser.add_argument("--dir", type=Path, required=True, help="a new (or empty) folder")
    parser.add_argument(
        "--tolerance",
        type=tolerance_argument,
        metavar="TOL[,KIND=TOL...]",
        help="compare numbers instead of stopping at the first byte that differs, with a "
        "tolerance per kind: weights (per tensor, relative to its largest value), values "
        "(log-probs, losses, metrics: relative above 1) and scores (eval: absolute); e.g. 1e-3 "
        "or 1e-3,scores=5e-3",
    )
    parser.add_argument("--venv", type=Path, help="reuse this environment instead of installing")
    parser.add_argument("--python", type=Path, help="reuse this interpreter's environment")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)


def main(args: argparse.Namespace) -> None:
    rows = replay(args)
    print(format_table(rows))
    for row in rows:
        for detail in row.details:
            print(f"  {row.artifact}: {detail}")
    compared = [row for row in rows if not row.match.startswith("record")]
    failed = [row for row in rows if not row.ok]
    records = len(rows) - len(compared)
    if failed:
        raise Diverged(
            f"{len(failed)} of {len(compared)} compared artifacts differ beyond "
            f"{args.tolerance}; first: {failed[0].artifact} (job {failed[0].job})"
        )
    mode = "match" if args.tolerance is None else f"match within {args.tolerance}"
    listed = f" ({records} listed, not compared)" if records else ""
    print(f"reproduced: all {len(compared)} compared artifacts {mode}{listed}")

"""`python -m amber_repro archive`: one bundle, results/archive/<name>.tar.gz (`bundle_name`: the
commit, the uncommitted diff when there is one, and the optional parts it holds), from
which `python -m amber_repro reproduce` (amber_repro/provenance/replay.py) reruns a finished run
offline and checks every result against the run's provenance crate.

The bundle (bundle_writer.py: the same run archived twice gives the same bytes):
  BUNDLE.json            commit, dirty flag, the run's Python version and platform, what is
                         included, the sha256 of every other member, and the sha256 of its own
                         content (manifest_sha256; bundle_checks.py)
  code/                  `git archive` of the commit
  code.commit            the commit object (`git cat-file commit`): with code/ it makes the commit
                         again, so the replay is a checkout of it and the stages record it (no
                         history needed: a shallow clone archives too)
  code.diff              uncommitted changes, untracked files included (only with --allow-dirty)
  config/run.yaml        the resolved config the run used (the crate's "config"), which the replay
                         runs with; config/... copies of the config files as they are
  requirements.lock      the lock
  results/...            the crate (ro-crate-metadata.json); the outputs of the jobs that fetch
                         from outside (the raw data's hub snapshot, the base model when it came
                         from the hub, the lm-eval datasets), which the replay restores instead of
                         downloading (synthetic data it generates again); the stage records and
                         model cards, to compare the replay's with; with --with-results every output
  wheels/                the lock's files, hashes checked, and BUILD_TOOLS (--with-wheels): the
                         replay installs without an index
  image/                 the Apptainer image (--with-image)
  ro-crate-metadata.json the bundle as a Workflow Run Crate (bundle_crate.py: the run's crate moved
  ro-crate-preview.html  into this layout), its preview, and README.md, what the bundle is
  README.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from amber_repro import __version__
from amber_repro.config.jobs import JOBS
from amber_repro.config.jobs import job as job_kind
from amber_repro.provenance.bundle_checks import DIGEST_KEY, FORMAT, MANIFEST, manifest_digest
from amber_repro.provenance.bundle_crate import PREVIEW, bundle_metadata, preview_html, readme
from amber_repro.provenance.bundle_writer import Bundle, bundle_name
from amber_repro.provenance.git_tree import ArchiveError, git, tree_state
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.verify import CRATE_NAME, Crate, comparison
from amber_repro.storage import human_bytes

# Jobs whose outputs the bundle holds and the replay restores (jobs.py: those that fetch what the
# run starts from, and the synthetic raw data): rule -> what they hold.
RESTORED_RULES = {job.rule: job.restored_as for job in JOBS if job.restored}
# What a legacy source distribution (setup.py, no pyproject.toml) asks pip for, besides setuptools.
BUILD_TOOLS = ("wheel==0.48.0",)


# --- members --------------------------------------------------------------------------------------


# --- what goes in ---------------------------------------------------------------------------------


def crate_checked(results: Path, crate: Crate, file_id: str) -> Path:
    """A result file to bundle, which must still be the file the crate describes."""
    path = results / file_id
    if not path.is_file():
        raise ArchiveError(f"{path}: listed in the crate but missing; rerun the workflow")
    if sha256_file(path) != crate.sha256(file_id):
        raise ArchiveError(
            f"{path} changed after the crate was written; rerun the workflow (snakemake) so that "
            "results/ro-crate-metadata.json describes the results again"
        )
    return path


def check_run_matches_tree(crate: Crate, state: dict) -> list[str]:
    """The crate's commit must be HEAD; returns warnings about the dirty state."""
    run_commit = crate.value("git_commit")
    if run_commit is None:
        raise ArchiveError(
            "the crate records no git commit: the results were not made in a git checkout, so no "
            "commit holds their code; run the workflow in a clone of the repository"
        )
    if run_commit != state["commit"]:
        raise ArchiveError(
            f"the results were made at commit {run_commit[:12]}, but HEAD is "
            f"{state['commit'][:12]}: check out {run_commit[:12]} to archive them, or rerun"
        )
    run_dirty, run_diff = crate.json_property("git_dirty"), crate.value("git_diff_sha256")
    if run_dirty and not state["dirty"]:
        raise ArchiveError(
            "the results were made from uncommitted changes, and the tree is clean now: those "
            "changes are gone; restore them and archive with ALLOW_DIRTY=1, or commit and rerun"
        )
    if state["dirty"] and (not run_dirty or run_diff != state["diff_sha256"]):
        return [
            "warning: the tree's uncommitted changes are not those the results were made with "
            f"(run: {'diff ' + run_diff[:12] if run_dirty else 'clean tree'}); the bundle holds "
            "the changes as they are now, so its replay may differ from the results"
        ]
    return []


def wheelhouse(lock: Path, out: Path) -> list[str]:
    """Every file of the lock as pip downloads it (`pip download --require-hashes`: the very files
    the lock's hashes name, a source distribution as it is), so that the replay installs the lock
    from them, hashes checked, with no index. The files are the CPU set-up's (torch's CPU build);
    a GPU replay runs in the image (--with-image). Building the lock's source distributions
    offline takes setuptools (in the lock) and BUILD_TOOLS (not: pip fetches them unhashed when an
    index is there; here the bundle's manifest holds their sha256)."""
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out)]
    for what in (["--require-hashes", "-r", str(lock)], list(BUILD_TOOLS)):
        result = subprocess.run([*command, *what], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ArchiveError(f"pip download {' '.join(what)} failed:\n{result.stderr[-3000:]}")
    return sorted(p.name for p in out.iterdir())


def config_members(bundle: Bundle, workdir: Path, crate: Crate) -> list[str]:
    """config/run.yaml (the resolved config, what the replay runs with) and copies of the config
    files."""
    header = (
        "# The resolved config of the archived run (its crate's PropertyValue 'config'): every\n"
        "# setting, so that `reproduce` runs with exactly these values.\n"
    )
    text = header + yaml.safe_dump(crate.config, sort_keys=False)
    if yaml.safe_load(text) != crate.config:
        raise ArchiveError("the crate's config does not survive a YAML round trip")
    bundle.add_bytes("config/run.yaml", text.encode())
    copied = []
    for path in sorted((workdir / "config").rglob("*")):
        relative = path.relative_to(workdir / "config").as_posix()
        if path.suffix in (".yaml", ".yml") and path.is_file() and relative != "run.yaml":
            bundle.add_file(f"config/{relative}", path)
            copied.append(f"config/{relative}")
    return ["config/run.yaml", *copied]


def checked_run(args: argparse.Namespace) -> tuple[Path, Path, dict, Crate]:
    """The repository, the results folder, the tree's state and the run's crate, or an
    ArchiveError naming why they cannot be archived (not a checkout, not its results, an
    uncommitted change without --allow-dirty, no crate)."""
    results = Path(args.results)
    workdir = results.resolve().parent
    crate_path = results / CRATE_NAME
    try:
        repo = Path(git(workdir, "rev-parse", "--show-toplevel").decode().strip())
    except ArchiveError:
        raise ArchiveError(f"{workdir} is not a git checkout: nothing names its code") from None
    if repo.resolve() != workdir:
        raise ArchiveError(f"{results} must be the results folder at the repository root {repo}")
    state = tree_state(repo)
    if state["dirty"] and not args.allow_dirty:
        paths = [line[3:] for line in state["status"]]
        listed = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise ArchiveError(
            f"the working tree differs from {state['commit'][:12]} ({listed}): commit the "
            "changes, or archive them as code.diff with ALLOW_DIRTY=1 (--allow-dirty)"
        )
    if not crate_path.is_file():
        raise ArchiveError(
            f"{crate_path}: no crate; run the whole workflow first (`snakemake --cores N`: "
            "rule all writes the crate)"
        )
    return repo, results, state, Crate(crate_path)


def result_members(crate: Crate, results: Path, with_results: bool, warnings: list[str]):
    """Which results the bundle holds: (restore, inputs, expected). `restore` maps the members
    the replay puts back (the outputs of RESTORED_RULES: what came from the network) to their
    places; `inputs` lists them by source; `expected` are the results the replay compares
    against (stage records, or every result with --with-results)."""
    workdir = results.resolve().parent
    restore: dict[str, str] = {}
    inputs: dict[str, list[str]] = {}
    for job in crate.jobs:
        if job.rule in RESTORED_RULES:
            inputs.setdefault(RESTORED_RULES[job.rule], []).extend(
                f"results/{f}" for f in job.results
            )
            for file_id in job.results:
                restore[f"results/{file_id}"] = f"results/{file_id}"
            if job_kind(job.rule).stage == "eval-datasets":
                restore.update(datasets_cache(workdir, crate.config, warnings))
    expected = [
        f"results/{file_id}"
        for job in crate.jobs
        for file_id in job.results
        if f"results/{file_id}" not in restore
        and (with_results or comparison(file_id, results / file_id) in ("json", "card"))
    ]
    return restore, inputs, expected


def build(args: argparse.Namespace, scratch: Path) -> tuple[Path, dict]:
    repo, results, state, crate = checked_run(args)
    workdir = repo.resolve()
    warnings = check_run_matches_tree(crate, state)

    bundle = Bundle(state["time"])
    bundle.add_git_archive(repo, state["commit"])
    bundle.add_bytes("code.commit", git(repo, "cat-file", "commit", state["commit"]))
    if state["patch"] is not None:
        bundle.add_bytes("code.diff", state["patch"])
    included = {"code": f"code/ (git archive {state['commit']}), code.commit"}
    included["code.diff"] = "code.diff" if state["patch"] is not None else None
    included["config"] = config_members(bundle, workdir, crate)
    lock = workdir / "requirements.lock"
    bundle.add_file("requirements.lock", lock)
    if sha256_file(lock) != crate.value("lock_sha256"):
        warnings.append("warning: requirements.lock differs from the lock the run recorded")

    restore, inputs, expected = result_members(crate, results, args.with_results, warnings)
    for member in sorted(set(restore) | set(expected)):
        if member.startswith("results/") and member[8:] in crate.entities:
            bundle.add_file(member, crate_checked(results, crate, member[8:]))
        else:
            bundle.add_file(member, workdir / member)
    bundle.add_file(f"results/{CRATE_NAME}", results / CRATE_NAME)

    included.update(inputs=inputs, expected_results=expected, wheels=None, image=None)
    if args.with_wheels:
        names = wheelhouse(lock, scratch / "wheels")
        bundle.add_tree("wheels", scratch / "wheels")
        included["wheels"] = f"{len(names)} files of requirements.lock"
    if args.with_image:
        included["image"] = add_image(bundle, workdir, crate.config, restore)
    add_bundle_crate(bundle, crate, state["commit"], included, args.with_results)
    return finish(args, bundle, state, crate, included, restore, warnings)


def add_bundle_crate(
    bundle: Bundle, crate: Crate, commit: str, included: dict, with_results: bool
) -> None:
    """README.md, ro-crate-metadata.json and ro-crate-preview.html at the bundle's root: the
    bundle as a Workflow Run Crate (bundle_crate.py), from the run's crate."""
    bundle.add_bytes("README.md", readme(commit, included, with_results).encode())
    metadata = bundle_metadata(crate.metadata, bundle.sha256 | {MANIFEST: ""}, commit)
    text = json.dumps(metadata, indent=4, sort_keys=True, ensure_ascii=False) + "\n"
    bundle.add_bytes(CRATE_NAME, text.encode())
    bundle.add_bytes(PREVIEW, preview_html(metadata).encode())


def datasets_cache(workdir: Path, config: dict, warnings: list[str]) -> dict[str, str]:
    cache = Path(config["eval"]["datasets_cache"])
    folder = cache if cache.is_absolute() else workdir / cache
    if cache.is_absolute() or not folder.is_dir():
        warnings.append(f"warning: the lm-eval datasets cache {cache} is not bundled")
        return {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    names = [p.relative_to(workdir).as_posix() for p in files]
    return {name: name for name in names}


def add_image(bundle: Bundle, workdir: Path, config: dict, restore: dict) -> str:
    image = config["container"]["image"]
    if "://" in image:
        raise ArchiveError(f"the image {image} is a registry reference: nothing to bundle")
    path = workdir / image
    if Path(image).is_absolute() or ".." in Path(image).parts:
        raise ArchiveError(
            f"container.image {image} lies outside the repository, where the replay cannot put "
            "it back: copy it into the repository (say containers/) or archive without WITH_IMAGE"
        )
    if not path.is_file():
        raise ArchiveError(f"{image}: no image to bundle (build it first: see containers/)")
    bundle.add_file(f"image/{path.name}", path)
    restore[f"image/{path.name}"] = image
    return f"image/{path.name}"


def finish(args, bundle, state, crate, included, restore, warnings) -> tuple[Path, dict]:
    manifest = {
        "format": FORMAT,
        "commit": state["commit"],
        "dirty": state["dirty"],
        "diff_sha256": state["diff_sha256"],
        "created_by": f"amber_repro {__version__}",
        "run": {
            name: crate.json_property(name)
            for name in ("git_commit", "git_dirty", "git_diff_sha256", "config_sha256")
        }
        | {"lock_sha256": crate.value("lock_sha256")},
        "interpreter": run_interpreter(crate),
        "includes": included,
        "restore": restore,
        "warnings": warnings,
        "members": bundle.sha256,
    }
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    out = Path(args.out_dir) / bundle_name(state, args)
    # Written beside its final name first: a bundle already there is never overwritten, and one
    # with the same bytes (the same run archived again) is kept as it is.
    candidate = out.with_name(f".{out.name}.new")
    bundle.write(candidate, manifest)
    if out.exists():
        same = sha256_file(out) == sha256_file(candidate)
        candidate.unlink()
        if not same:
            raise ArchiveError(
                f"{out} exists and holds another bundle; move it away or give another --out-dir "
                "(a bundle is never overwritten)"
            )
        return out, manifest | {"unchanged": True}
    candidate.rename(out)
    return out, manifest


def run_interpreter(crate: Crate) -> dict:
    """The Python the run's stages recorded (their `software`), and this host's platform: what the
    replay needs (a different minor version is refused there)."""
    software = crate.json_property("software")
    recorded = software.get("python") if isinstance(software, dict) else None
    return {
        "python": recorded or platform.python_version(),
        "platform": f"{platform.system().lower()}-{platform.machine()}",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished run")
    parser.add_argument("--out-dir", type=Path, default=Path("results/archive"))
    parser.add_argument(
        "--allow-dirty", action="store_true", help="bundle uncommitted changes as code.diff"
    )
    parser.add_argument("--with-wheels", action="store_true", help="a wheelhouse of the lock")
    parser.add_argument("--with-image", action="store_true", help="the Apptainer image")
    parser.add_argument(
        "--with-results", action="store_true", help="every output (tolerance mode compares them)"
    )


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out, manifest = build(args, Path(scratch))
    for warning in manifest["warnings"]:
        print(warning, file=sys.stderr)
    state = "dirty (code.diff included)" if manifest["dirty"] else "clean"
    print(f"commit {manifest['commit'][:12]}, tree {state}, {len(manifest['members'])} members")
    if manifest.get("unchanged"):
        print(f"{out} already holds this bundle, byte for byte: kept")
    else:
        print(f"wrote {out} ({human_bytes(out.stat().st_size)})")

"""`make archive` and `make reproduce` on a run of the embedded preset: a bundle of a finished
run replays offline in a fresh folder, artifact by artifact, and a changed byte or setting names
the first artifact that diverged.

The finished run is the session's `quick_pipeline` (the quick test settings: the replay reruns
every job, and what it checks does not depend on how well the tiny model learns). Its copy of the
workflow is no git checkout, so here it is made one, as a user's clone would be (the workflow
committed, results/ and .snakemake/ beside it), and its crate is rebuilt to name that commit (the
provenance job only). The replays reuse this interpreter's environment: installing torch would
take longer than the tests may.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Workdir, commit_all, git, scheduled_jobs, snakemake_env
from processes import run

VENV = Path(sys.prefix)
RAW_TRAIN = "results/raw/pku-saferlhf/train.parquet"


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`make` as a user runs it, with this environment as the Makefile's VENV (-o: never
    reinstalled by a test). The hub is unreachable: any download would fail."""
    env = {**snakemake_env(), "HF_ENDPOINT": "http://127.0.0.1:9"}
    command = ["make", "--no-print-directory", "-o", f"{VENV}/.installed", f"VENV={VENV}", *args]
    return run(command, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def checkout(quick_pipeline, tmp_path_factory) -> Path:
    """A finished pipeline in a git checkout of its workflow (with the Makefile)."""
    path = tmp_path_factory.mktemp("checkout") / "amber-repro"
    shutil.copytree(quick_pipeline.path, path, symlinks=True)  # mtimes kept: nothing to rerun
    for name in (".gitignore", "Makefile"):
        shutil.copy2(REPO / name, path / name)
    commit_all(path, "the workflow as run")
    workdir = Workdir.existing(path)
    (path / "results" / "ro-crate-metadata.json").unlink()
    workdir.snakemake("results/ro-crate-metadata.json")
    assert scheduled_jobs(workdir.snakemake("-n").stdout) == {}
    assert git(path, "status", "--porcelain") == ""
    return path


@pytest.fixture(scope="module")
def bundle(checkout, tmp_path_factory) -> Path:
    result = make(checkout, "archive")
    assert result.returncode == 0, result.stdout + result.stderr
    commit = git(checkout, "rev-parse", "HEAD").strip()
    path = checkout / "results" / "archive" / f"amber-repro-{commit[:12]}.tar.gz"
    assert f"wrote results/archive/{path.name} (" in result.stdout
    kept = tmp_path_factory.mktemp("bundle") / path.name  # later tests archive over it
    shutil.copy2(path, kept)
    return kept


def members(path: Path) -> dict[str, bytes | None]:
    with tarfile.open(path) as tar:
        return {info.name: tar.extractfile(info).read() if info.isfile() else None for info in tar}


def changed_bundle(bundle: Path, out: Path, name: str, change) -> Path:
    """A copy of the bundle with one member's bytes changed (BUNDLE.json left as it was)."""
    with tarfile.open(bundle) as old, tarfile.open(out, "w:gz") as new:
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None
            if info.name == name:
                data = change(data)
                info.size = len(data)
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def reproduce(bundle: Path, replay: Path, *args: str):
    return make(REPO, "reproduce", f"ARCHIVE={bundle}", f"DIR={replay}", *args)


def test_the_bundle_holds_code_config_lock_raw_data_and_crate(bundle, checkout):
    found = members(bundle)
    manifest = json.loads(found["BUNDLE.json"])
    assert next(iter(found)) == "BUNDLE.json"
    assert manifest["commit"] == git(checkout, "rev-parse", "HEAD").strip()
    assert manifest["dirty"] is False and "code.diff" not in found
    for name in (
        "code/Snakefile",
        "code/amber_repro/training/sft.py",
        "code.commit",
        "requirements.lock",
    ):
        assert name in found, name
    for split in ("train", "test"):  # generated again by the replay, not bundled
        assert f"results/raw/pku-saferlhf/{split}.parquet" not in found
    assert manifest["restore"] == {}  # nothing here came from the network
    # The tiny base model is built again, not fetched: only its record and card are bundled, as
    # the originals its rows are compared with.
    base_model = {
        name.rsplit("/", 1)[1] for name in found if name.startswith("results/base_model/")
    }
    assert base_model == {"amber_repro.json", "README.md"}, base_model
    assert "results/ro-crate-metadata.json" in found
    run_config = yaml.safe_load(found["config/run.yaml"])
    assert run_config["preset"] == "embedded" and run_config["sft"]["lr"] == 1e-3
    for name, digest in manifest["members"].items():
        if found[name] is not None:
            assert hashlib.sha256(found[name]).hexdigest() == digest, name
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert manifest["manifest_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_an_edited_bundle_json_is_refused_before_anything_is_restored(bundle, tmp_path):
    def retarget(data: bytes) -> bytes:
        manifest = json.loads(data)
        manifest["restore"][RAW_TRAIN] = "../../outside.parquet"
        return json.dumps(manifest).encode()

    edited = changed_bundle(bundle, tmp_path / "edited.tar.gz", "BUNDLE.json", retarget)
    result = reproduce(edited, tmp_path / "replay")
    assert result.returncode == 2
    assert "error: " in result.stderr and "Traceback" not in result.stderr
    assert "BUNDLE.json was changed after the bundle was made" in result.stderr
    assert not (tmp_path / "outside.parquet").exists()
    assert not (tmp_path / "replay" / "code" / "results").exists()


def test_a_bundle_reproduces_every_artifact_offline(bundle, tmp_path):
    result = reproduce(bundle, tmp_path / "replay")
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    rows = [line for line in table.splitlines() if line.startswith(("raw/", "ambersafe/"))]
    assert len(rows) > 30
    assert all(
        ("  yes" in row or "  record (not compared" in row or "  present (named by time)" in row)
        for row in rows
    ), table
    # Records and model cards are compared too, without what was measured; TensorBoard files,
    # whose names hold the time, host and pid, must exist.
    sft_record = next(r for r in rows if r.startswith("ambersafe/sft/amber_repro.json "))
    assert "  yes (without " in sft_record and "timing" not in sft_record, sft_record
    assert next(r for r in rows if r.startswith("ambersafe/sft/README.md ")).endswith(
        "  yes (without measured rows)"
    )
    assert any(r.startswith("ambersafe/sft/tensorboard/") and "present" in r for r in rows)
    # The synthetic raw data was generated again, not restored, and matched byte for byte.
    for split in ("train", "test"):
        row = next(r for r in rows if r.startswith(f"raw/pku-saferlhf/{split}.parquet "))
        assert row.endswith("  yes") and "(restored)" not in row, row
    eval_row = next(row for row in rows if row.startswith("ambersafe/eval.json "))
    # The pipeline ran outside git, so its records' `run` names no commit: it differs too.
    assert eval_row.endswith("  yes (without timing, run)")
    for artifact in ("ambersafe/dpo/model.safetensors", "ambersafe/ref_logps/train.parquet"):
        assert next(r for r in rows if r.startswith(artifact + " ")).endswith("  yes")
    assert "reproduced: all" in table
    assert git(tmp_path / "replay" / "code", "status", "--porcelain") == ""


def test_a_changed_seed_is_the_first_divergence_in_the_regenerated_raw_data(bundle, tmp_path):
    """The replay generates the synthetic raw data again (it is not in the bundle) and compares it
    byte for byte: another seed diverges at the first job, and nothing after it runs."""

    def reseed(data: bytes) -> bytes:
        config = yaml.safe_load(data)
        config["data"]["synthetic"]["seed"] += 1
        return yaml.safe_dump(config, sort_keys=False).encode()

    changed = changed_bundle(bundle, tmp_path / "reseeded.tar.gz", "config/run.yaml", reseed)
    replay = tmp_path / "replay"
    result = reproduce(changed, replay)
    assert result.returncode != 0
    assert "first divergence: raw/pku-saferlhf/" in result.stderr, result.stderr[-3000:]
    assert "made by job synthesize_data" in result.stderr
    assert not (replay / "code" / "results" / "ambersafe").exists()  # nothing after it ran


def test_a_changed_setting_names_the_first_stage_it_reaches(bundle, tmp_path):
    def double_sft_lr(data: bytes) -> bytes:
        config = yaml.safe_load(data)
        config["sft"]["lr"] *= 2
        return yaml.safe_dump(config, sort_keys=False).encode()

    changed = changed_bundle(bundle, tmp_path / "changed.tar.gz", "config/run.yaml", double_sft_lr)
    replay = tmp_path / "replay"
    result = reproduce(changed, replay)
    assert result.returncode != 0
    assert "config/run.yaml differs from the run's config: sft.lr: 0.001 -> 0.002" in (
        result.stderr
    )
    assert "made by job sft (SFT)" in result.stderr
    ran = sorted(log.stem for log in (replay / "replay-logs").glob("*.log"))
    assert ran == ["build_tiny_model", "filter_pairs", "sft", "synthesize_data"]


def test_archiving_again_gives_the_same_bytes_and_never_overwrites(bundle, checkout):
    """No time or host inside a bundle: archiving the same run again gives the same bytes, which
    are kept. Another bundle under that name is refused and left as it was; bundles with other
    parts get other names."""
    out = checkout / "results" / "archive" / bundle.name
    again = make(checkout, "archive")
    assert again.returncode == 0, again.stderr
    assert f"{out.relative_to(checkout)} already holds this bundle, byte for byte" in again.stdout
    out.write_bytes(b"another bundle")
    refused = make(checkout, "archive")
    assert refused.returncode == 2 and "exists and holds another bundle" in refused.stderr
    assert out.read_bytes() == b"another bundle"
    out.unlink()
    assert make(checkout, "archive").returncode == 0
    assert out.read_bytes() == bundle.read_bytes()  # a second archive, written afresh: same bytes
    with_results = make(checkout, "archive", "WITH_RESULTS=1")
    assert with_results.returncode == 0, with_results.stderr
    assert f"wrote results/archive/{bundle.name.removesuffix('.tar.gz')}-results.tar.gz" in (
        with_results.stdout
    )
    assert out.read_bytes() == bundle.read_bytes()


def test_a_dirty_tree_is_refused_and_recorded_with_allow_dirty(checkout):
    snakefile = checkout / "Snakefile"
    original = snakefile.read_bytes()
    snakefile.write_bytes(original + b"# an uncommitted edit\n")
    (checkout / "notes.txt").write_text("untracked, part of the tree\n")
    try:
        refused = make(checkout, "archive")
        assert refused.returncode != 0
        said = [
            line for line in refused.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)
        ]
        assert len(said) == 1 and "the working tree differs from" in said[0], said
        assert "Snakefile" in said[0] and "notes.txt" in said[0], said
        allowed = make(checkout, "archive", "ALLOW_DIRTY=1")
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "tree dirty (code.diff included)" in allowed.stdout
        bundle = next((checkout / "results" / "archive").glob("*-dirty-*.tar.gz"))
        found = members(bundle)
        assert json.loads(found["BUNDLE.json"])["dirty"] is True
        diff = found["code.diff"].decode()
        assert "+# an uncommitted edit" in diff and "notes.txt" in diff
    finally:
        snakefile.write_bytes(original)
        (checkout / "notes.txt").unlink()

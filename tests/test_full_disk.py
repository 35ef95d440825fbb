"""A full disk is named (file system, file, free and needed space) and leaves no temporary behind.

Each run writes onto a real, small tmpfs mounted in a private mount namespace (`unshare`), so the
write fails the way it does on a full scratch file system: ENOSPC from the kernel, reported by
polars, torch or Python in their own words.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from processes import run
from torch.distributed.checkpoint.api import CheckpointException

from amber_repro.errors import DiskFullError
from amber_repro.storage import disk_full_errors, human_bytes, is_disk_full

# "no space left on /x (tmpfs) writing /x/f (12.0 KiB free, about 3.1 MiB needed)"
MESSAGE = re.compile(
    r"error: no space left on (?P<mount>\S+) \(tmpfs\) writing (?P<path>\S+) "
    r"\((?P<free>[0-9.]+ \w+) free, about (?P<needed>[0-9.]+ \w+) needed\)"
)


def run_on_small_tmpfs(mount: Path, size: str, command: list[str]) -> tuple[int, str, list[str]]:
    """Run `command` with a `size` tmpfs mounted at `mount`; its exit code, stderr, and what was
    left in the tmpfs (every file, relative, hidden ones included)."""
    mount.mkdir(parents=True, exist_ok=True)
    listing = mount.parent / "listing.txt"
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} || exit 99; "
        f"{shlex.join(command)}; rc=$?; "
        f"cd {shlex.quote(str(mount))} && find . -mindepth 1 > {shlex.quote(str(listing))}; "
        "exit $rc"
    )
    result = run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script])
    assert result.returncode != 99, f"could not mount a tmpfs: {result.stderr}"
    return result.returncode, result.stderr, listing.read_text().split()


@pytest.fixture(scope="module")
def raw_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    subprocess.run(
        [sys.executable, "-m", "amber_repro", "synthesize", "--out-dir", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_a_filter_on_a_full_disk_names_it_and_leaves_no_temporary(raw_data, tmp_path):
    mount = tmp_path / "small"
    command = [
        sys.executable,
        "-m",
        "amber_repro",
        "filter",
        "--raw",
        str(raw_data / "train.parquet"),
        str(raw_data / "test.parquet"),
        "--source",
        str(raw_data / "source.json"),
        "--out-dir",
        str(mount / "data"),
    ]
    rc, stderr, left = run_on_small_tmpfs(mount, "16k", command)
    assert rc == 2, stderr
    match = MESSAGE.search(stderr)
    assert match, stderr
    assert match["mount"] == str(mount)
    assert match["path"] == str(mount / "data" / "pairs-train.parquet")
    assert "Traceback" not in stderr
    # Only the (empty) output folder: no .pairs-train.parquet.tmp-XXXXXXXX, no partial parquet.
    assert left == ["./data"], left


def test_a_model_save_on_a_full_disk_names_it_and_leaves_no_temporary(pipeline, tmp_path):
    """SFT's final save_pretrained (torch/safetensors writing) onto a disk too small for it."""
    root = pipeline.path / "results"
    mount = tmp_path / "small"
    command = [
        sys.executable,
        "-m",
        "amber_repro",
        "sft",
        "--data",
        str(root / "ambersafe/data/sft-train.parquet"),
        "--model",
        str(root / "base_model"),
        "--batch-size",
        "8",
        "--gradient-accumulation-steps",
        "1",
        "--max-steps",
        "2",
        "--max-length",
        "128",
        "--max-prompt-length",
        "64",
        "--out-dir",
        str(mount / "sft"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    rc, stderr, left = run_on_small_tmpfs(mount, "64k", command)
    assert rc == 2, stderr
    match = MESSAGE.search(stderr)
    assert match, stderr
    assert match["path"] == str(mount / "sft")
    weights = sum(
        f.stat().st_size for f in (root / "base_model").glob("*.safetensors")
    )  # the estimate is the weights' size, give or take the headers
    needed_value, needed_unit = match["needed"].split()
    assert needed_unit == human_bytes(weights).split()[1]
    assert abs(float(needed_value) - float(human_bytes(weights).split()[0])) <= 0.2
    assert left == [], left


def test_a_checkpoint_on_a_full_disk_names_it_and_leaves_no_temporary(pipeline, tmp_path):
    """The resumable checkpoint (torch distributed checkpoint + torch.save) onto a small disk."""
    root = pipeline.path / "results"
    mount = tmp_path / "small"
    command = [
        sys.executable, "-m", "amber_repro", "sft",
        "--data", str(root / "ambersafe/data/sft-train.parquet"),
        "--model", str(root / "base_model"),
        "--batch-size", "8", "--gradient-accumulation-steps", "1", "--max-steps", "2",
        "--checkpoint-every", "1", "--max-length", "128", "--max-prompt-length", "64",
        "--out-dir", str(tmp_path / "sft"), "--state-dir", str(mount / "state"),
    ]  # fmt: skip
    rc, stderr, left = run_on_small_tmpfs(mount, "256k", command)
    assert rc == 2, stderr
    match = MESSAGE.search(stderr)
    assert match, stderr
    assert match["path"] == str(mount / "state" / ".checkpoint.tmp")
    assert "Traceback" not in stderr
    assert not (tmp_path / "sft").exists()
    # The live log survives; no checkpoint folder, complete or partial, is left.
    assert not [p for p in left if "checkpoint" in p], left
    assert "./state/metrics.jsonl" in left


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
        RuntimeError("polars: I/O error: No space left on device (os error 28)"),
        # torch's distributed checkpoint: a BaseException collecting each process's error
        CheckpointException("save failed", {0: (RuntimeError("unexpected pos 704 vs 598"), None)}),
    ],
)
def test_each_librarys_wording_of_a_full_disk_is_recognised(error, tmp_path):
    expected = rf"writing {re.escape(str(tmp_path / 'f'))} .*about 2\.0 KiB needed"
    with pytest.raises(DiskFullError, match=expected), disk_full_errors(tmp_path / "f", 2048):
        raise error


@pytest.mark.parametrize(
    "error",
    [OSError(13, "Permission denied"), RuntimeError("size mismatch"), ValueError("no space")],
)
def test_other_errors_pass_through_unchanged(error, tmp_path):
    with pytest.raises(type(error)) as raised, disk_full_errors(tmp_path / "f"):
        raise error
    assert raised.value is error
    assert not is_disk_full(error)


def test_a_full_disk_behind_another_error_is_still_recognised():
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)

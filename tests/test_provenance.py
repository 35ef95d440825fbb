"""atomic_path: the one way outputs are written (files and save_pretrained folders)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from amber_repro.data.filtering import write_parquet
from amber_repro.storage import atomic_path, atomic_write_text, read_json, write_json


class Boom(Exception):
    pass


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_new_file_appears_whole_with_no_temporary_left(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.tmp-")
        assert not target.exists()
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert entries(target.parent) == ["out.txt"]


def test_success_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    atomic_write_text(target, "text\n")
    assert target.read_text() == "text\n"
    assert entries(tmp_path) == ["out.json"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt, SystemExit])
def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise error()
    assert target.read_text() == "old"
    assert entries(tmp_path) == ["out.txt"]


def test_a_failure_before_any_write_leaves_no_target(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_path(target):
        raise Boom()
    assert entries(tmp_path) == []


def test_a_block_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(target):
        pass
    assert target.read_text() == "old" and entries(tmp_path) == ["out.txt"]


def test_success_replaces_an_existing_directory(tmp_path):
    target = tmp_path / "model"
    (target / "nested").mkdir(parents=True)
    (target / "old-only.bin").write_text("old")
    (target / "nested" / "x").write_text("old")
    with atomic_path(target) as tmp:
        (tmp / "nested").mkdir(parents=True)
        (tmp / "nested" / "x").write_text("new")
        (tmp / "config.json").write_text("{}")
        assert (target / "old-only.bin").exists()  # the old folder stays until the block ends
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        "config.json",
        "nested",
        "nested/x",
    ]
    assert (target / "nested" / "x").read_text() == "new"
    assert entries(tmp_path) == ["model"]


def test_a_failure_leaves_the_old_directory_and_no_temporary(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise Boom()
    assert entries(target) == ["weights"] and (target / "weights").read_text() == "old"
    assert entries(tmp_path) == ["model"]


def test_a_directory_can_replace_a_file_and_a_file_a_directory(tmp_path):
    target = tmp_path / "thing"
    target.write_text("file")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "inside").write_text("x")
    assert (target / "inside").read_text() == "x"
    atomic_write_text(target, "file again")
    assert target.read_text() == "file again"
    assert entries(tmp_path) == ["thing"]


def test_temporaries_left_by_a_killed_write_are_removed_by_the_next_one(tmp_path):
    target = tmp_path / "out.parquet"
    script = (
        "import os, sys\n"
        "from amber_repro.storage import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'part').write_text('half')\n"
        "    os._exit(9)  # like SIGKILL: no exception, no clean-up\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(target)])
    assert killed.returncode == 9
    assert [n for n in entries(tmp_path) if n.startswith(".out.parquet.tmp-")]
    unrelated = tmp_path / ".other.tmp-0123abcd"
    unrelated.write_text("not ours")
    write_parquet(pl.DataFrame({"x": [1, 2]}), target)
    assert pl.read_parquet(target)["x"].to_list() == [1, 2]
    assert entries(tmp_path) == [".other.tmp-0123abcd", "out.parquet"]


def test_new_files_get_the_usual_permissions(tmp_path):
    """Not mkstemp's 0600: the outputs are meant to be read by others the umask allows."""
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "record.json", {})
    finally:
        os.umask(umask)
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o644

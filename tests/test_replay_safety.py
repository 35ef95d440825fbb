"""A bundle cannot reach outside the replay folder: `reproduce` refuses, in one line and with exit
code 2, a `restore` entry whose target climbs out of DIR/code or whose source is an absolute path,
a path through a symlink that leads outside, and a BUNDLE.json edited after the bundle was made.
Nothing outside DIR is touched. The bundles here are crafted by hand (a few bytes, no pipeline).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from amber_repro.__main__ import main
from amber_repro.errors import AmberError
from amber_repro.provenance import replay

RAW = "results/raw/pku-saferlhf/train.parquet"


def digest(manifest: dict) -> str:
    """BUNDLE.json's own sha256: canonical JSON of everything but the digest."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def crafted(path: Path, restore: dict, files: dict[str, bytes], edit=None, links=None) -> Path:
    """A bundle of `files` (and symlinks `links`: name -> target) whose BUNDLE.json lists them with
    their sha256 and the given `restore` map, its digest right (as a forger would make it);
    `edit(manifest)` changes it after the digest was taken."""
    members = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    manifest = {"format": "amber-repro bundle 2", "commit": "0" * 40, "restore": restore}
    manifest["members"] = members
    manifest["manifest_sha256"] = digest(manifest)
    if edit:
        edit(manifest)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"BUNDLE.json": json.dumps(manifest).encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def reproduce(archive: Path, folder: Path, capsys) -> tuple[int, str]:
    code = main(["reproduce", "--archive", str(archive), "--dir", str(folder), "--python", "x"])
    return code, capsys.readouterr().err


def refusal(err: str) -> str:
    """The one error line; no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_a_restore_target_climbing_out_of_dir_is_refused(tmp_path, capsys):
    outside = tmp_path / "deep"
    folder = outside / "er" / "replay"  # code/../../../escaped would be deep/escaped
    files = {RAW: b"raw data", "code/Snakefile": b"rule all: pass\n"}
    bundle = crafted(tmp_path / "b.tar.gz", {RAW: "../../../escaped"}, files)
    code, err = reproduce(bundle, folder, capsys)
    line = refusal(err)
    assert code == 2
    assert "restore target '../../../escaped'" in line and RAW in line and "'..'" in line
    assert not (outside / "escaped").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["er"]
    assert (folder / RAW).read_bytes() == b"raw data"  # not moved either


def test_an_absolute_restore_source_is_refused_and_the_file_stays(tmp_path, capsys):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("someone else's file\n")
    files = {"code/Snakefile": b"rule all: pass\n"}
    bundle = crafted(tmp_path / "b.tar.gz", {str(victim): "results/stolen.txt"}, files)
    code, err = reproduce(bundle, tmp_path / "replay", capsys)
    line = refusal(err)
    assert code == 2
    assert f"restore source {str(victim)!r}" in line and "not a listed member" in line
    assert victim.read_text() == "someone else's file\n"
    assert not (tmp_path / "replay" / "code" / "results").exists()


def test_an_absolute_member_name_in_bundle_json_is_refused(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("kept\n")

    def list_outside_file(manifest):  # listed, so the "listed member" check alone would pass
        manifest["members"][str(victim)] = "0" * 64
        manifest["restore"] = {str(victim): "results/stolen.txt"}
        manifest["manifest_sha256"] = digest(manifest)

    files = {"code/Snakefile": b"rule all: pass\n"}
    bundle = crafted(tmp_path / "b.tar.gz", {}, files, edit=list_outside_file)
    code, err = reproduce(bundle, tmp_path / "replay", capsys)
    assert code == 2
    assert f"member {str(victim)!r} is an absolute path, outside the replay folder" in refusal(err)
    assert victim.read_text() == "kept\n"


def test_a_symlinked_folder_inside_the_bundle_leading_out_of_code_is_refused(tmp_path, capsys):
    """`code/results` a symlink to `../loot` (inside DIR, so tar's data filter lets it through):
    the restore target resolves outside DIR/code."""
    files = {RAW: b"raw data", "code/Snakefile": b"rule all: pass\n"}
    links = {"code/results": "../loot"}
    bundle = crafted(tmp_path / "b.tar.gz", {RAW: RAW}, files, links=links)
    folder = tmp_path / "replay"
    code, err = reproduce(bundle, folder, capsys)
    line = refusal(err)
    assert code == 2
    assert f"restore target {RAW!r} (of {RAW!r}) resolves to {folder / 'loot'}" in line
    assert f"outside {folder / 'code'}" in line
    assert not (folder / "loot").exists()


def test_a_symlink_loop_on_the_way_is_refused_in_one_line(tmp_path, capsys):
    files = {"code/Snakefile": b"rule all: pass\n", RAW: b"raw data"}
    bundle = crafted(tmp_path / "b.tar.gz", {RAW: "loop/x"}, files, links={"code/loop": "loop"})
    code, err = reproduce(bundle, tmp_path / "replay", capsys)
    assert code == 2
    assert "restore target 'loop/x' (of " in refusal(err) and "cannot be resolved" in refusal(err)


def test_a_bundle_json_edited_after_the_bundle_was_made_is_refused(tmp_path, capsys):
    def retarget(manifest):
        manifest["restore"][RAW] = "results/raw/other.parquet"

    files = {RAW: b"raw data", "code/Snakefile": b"rule all: pass\n"}
    bundle = crafted(tmp_path / "b.tar.gz", {RAW: RAW}, files, edit=retarget)
    code, err = reproduce(bundle, tmp_path / "replay", capsys)
    assert code == 2
    assert "BUNDLE.json was changed after the bundle was made" in refusal(err)


def test_a_bundle_of_another_format_is_refused(tmp_path, capsys):
    def older(manifest):
        manifest["format"] = "amber-repro bundle 1"
        del manifest["manifest_sha256"]

    bundle = crafted(tmp_path / "b.tar.gz", {}, {"code/x": b"x"}, edit=older)
    code, err = reproduce(bundle, tmp_path / "replay", capsys)
    assert code == 2
    assert "BUNDLE.json has format 'amber-repro bundle 1', not 'amber-repro bundle 2'" in (
        refusal(err)
    )


# --- restore() itself, at the moment it moves files: after the checkout, whose code.diff may
# have made symlinks anywhere (git apply writes a symlink to any target) ---------------------------


def refused(target: Path, manifest: dict) -> str:
    with pytest.raises(AmberError) as caught:
        replay.restore(target, manifest)
    return str(caught.value)


def unpacked(tmp_path: Path, restore: dict, members: list[str]) -> tuple[Path, dict]:
    target = tmp_path / "replay"
    (target / "code").mkdir(parents=True)
    return target, {"restore": restore, "members": {name: "0" * 64 for name in members}}


def test_restore_refuses_a_target_climbing_out_and_writes_nothing_outside(tmp_path):
    target, manifest = unpacked(tmp_path, {RAW: "../../escaped"}, [RAW])
    (target / RAW).parent.mkdir(parents=True)
    (target / RAW).write_bytes(b"raw data")
    why = refused(target, manifest)
    assert why == "BUNDLE.json: restore target '../../escaped' (of " + repr(RAW) + ") climbs " + (
        "out of its folder with '..'"
    )
    assert not (tmp_path / "escaped").exists()
    assert (target / RAW).read_bytes() == b"raw data"


def test_restore_refuses_an_absolute_source_and_leaves_it_where_it_is(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    target, manifest = unpacked(tmp_path, {str(victim): "results/v.txt"}, [str(victim)])
    assert f"restore source {str(victim)!r} is an absolute path" in refused(target, manifest)
    assert victim.read_text() == "someone else's file\n"
    assert not (target / "code" / "results").exists()


def test_restore_refuses_a_symlinked_folder_on_the_way_out(tmp_path):
    target, manifest = unpacked(tmp_path, {RAW: RAW}, [RAW])
    (target / RAW).parent.mkdir(parents=True)
    (target / RAW).write_bytes(b"raw data")
    loot = tmp_path / "loot"
    loot.mkdir()
    (target / "code" / "results").symlink_to(loot)  # as a code.diff could have made it
    why = refused(target, manifest)
    assert f"restore target {RAW!r} (of {RAW!r}) resolves to {loot / 'raw'}" in why
    assert list(loot.iterdir()) == []
    assert (target / RAW).read_bytes() == b"raw data"


def test_restore_refuses_a_source_reached_through_a_symlink_to_elsewhere(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.txt").write_text("someone else's file\n")
    target, manifest = unpacked(tmp_path, {"inputs/victim.txt": "results/v.txt"}, [])
    manifest["members"]["inputs/victim.txt"] = "0" * 64
    (target / "inputs").symlink_to(elsewhere)
    why = refused(target, manifest)
    assert f"restore source 'inputs/victim.txt' resolves to {elsewhere / 'victim.txt'}" in why
    assert (elsewhere / "victim.txt").read_text() == "someone else's file\n"
    assert not (target / "code" / "results").exists()


def test_restore_moves_listed_members_into_code(tmp_path):
    target, manifest = unpacked(tmp_path, {RAW: RAW}, [RAW])
    (target / RAW).parent.mkdir(parents=True)
    (target / RAW).write_bytes(b"raw data")
    assert replay.restore(target, manifest) == [RAW]
    assert files_in(target) == {f"code/{RAW}": b"raw data"}


# --- the replay folder ----------------------------------------------------------------------------


def test_a_dir_that_is_a_file_is_called_a_file(tmp_path, capsys):
    folder = tmp_path / "replay"
    folder.write_text("a file\n")
    bundle = crafted(tmp_path / "b.tar.gz", {}, {"code/x": b"x"})
    code, err = reproduce(bundle, folder, capsys)
    assert code == 2
    assert refusal(err) == f"error: {folder} is a file, not a folder: give a new folder"
    assert folder.read_text() == "a file\n"

"""A file deleted or overwritten inside a finished output (issue 24, item 10).

Snakemake sees output folders by their timestamps, so it plans nothing after such damage. A model
folder's amber_repro.json records its files and loading checks them (provenance/model_files.py);
`python -m amber_repro verify` checks every output against the crate (provenance/damage.py). The
embedded run (`pipeline`) is copied, never damaged in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from amber_repro.__main__ import main
from amber_repro.provenance.model_files import DamagedOutputError
from amber_repro.training.runtime import load_model, load_tokenizer

CPU = torch.device("cpu")


@pytest.fixture
def sft_copy(pipeline, tmp_path) -> Path:
    folder = tmp_path / "sft"
    shutil.copytree(pipeline.path / "results/ambersafe/sft", folder)
    return folder


def load(folder: Path):
    return load_model(folder, torch.float32, CPU)


def rebuild_hint(folder: Path) -> str:
    return f"rebuild it: snakemake --cores N --force {folder} (made by `python -m amber_repro sft`)"


def zero_the_tail(path: Path, n: int = 4096) -> None:
    """Junk of the same size over the last tensors' bytes: still a valid safetensors file."""
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(n)
    path.write_bytes(bytes(data))


def test_a_deleted_weights_file_is_named_with_how_to_rebuild(sft_copy):
    (sft_copy / "model.safetensors").unlink()
    with pytest.raises(DamagedOutputError) as caught:
        load(sft_copy)
    message = str(caught.value)
    assert message.startswith(f"{sft_copy / 'model.safetensors'}: missing (recorded sha256 ")
    assert message.endswith(rebuild_hint(sft_copy)) and "\n" not in message


@pytest.mark.parametrize("junk", ["shorter", "same size"])
def test_junk_over_the_weights_is_named(sft_copy, junk):
    weights = sft_copy / "model.safetensors"
    if junk == "shorter":
        weights.write_bytes(b"not a safetensors file")
        expected = "changed: 22 bytes (recorded sha256 "
    else:  # before the check this loaded without a word, with zeros for weights
        zero_the_tail(weights)
        expected = "changed: sha256 "
    with pytest.raises(DamagedOutputError, match=r"model\.safetensors") as caught:
        load(sft_copy)
    assert str(caught.value).startswith(f"{weights}: {expected}")
    assert str(caught.value).endswith(rebuild_hint(sft_copy))


def test_a_changed_tokenizer_file_is_named_where_the_tokenizer_loads(sft_copy):
    config = sft_copy / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 7}))
    with pytest.raises(DamagedOutputError, match=r"tokenizer_config\.json: changed"):
        load_tokenizer(sft_copy)


def test_folders_recording_only_weights_hashes_are_checked_by_them(sft_copy):
    """amber_repro.json as written before the `files` record: `weights_sha256` alone."""
    record_path = sft_copy / "amber_repro.json"
    record = json.loads(record_path.read_text())
    assert set(record.pop("files")) >= {"model.safetensors", "config.json", "tokenizer.json"}
    record_path.write_text(json.dumps(record))
    zero_the_tail(sft_copy / "model.safetensors")
    with pytest.raises(DamagedOutputError, match=r"model\.safetensors: changed: sha256"):
        load(sft_copy)


def test_a_folder_without_a_record_loads_as_before(sft_copy):
    """A hub download records its repository and commit, not its files: nothing to check."""
    (sft_copy / "amber_repro.json").unlink()
    (sft_copy / "amber_repro_source.json").write_text('{"kind": "hub", "model": "x/y"}')
    zero_the_tail(sft_copy / "model.safetensors")
    assert load(sft_copy).config.model_type == "llama"


def test_verify_names_exactly_the_damaged_outputs_and_their_rules(
    pipeline, tmp_path, monkeypatch, capsys
):
    shutil.copytree(pipeline.path / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)  # where snakemake runs: targets relative to it
    assert main(["verify"]) == 0
    listed = capsys.readouterr().out.strip()
    assert (
        listed.endswith(
            "outputs listed in results/ro-crate-metadata.json: every one present, "
            "size and sha256 as recorded"
        )
        and "\n" not in listed
    )

    zero_the_tail(Path("results/ambersafe/sft/model.safetensors"))
    Path("results/ambersafe/eval/base.json").unlink()
    assert main(["verify", "results"]) == 1
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("results/ambersafe/sft/model.safetensors: changed: sha256 ")
    assert lines[0].endswith("; made by rule sft")
    assert lines[1].startswith("results/ambersafe/eval/base.json: missing (recorded sha256 ")
    assert lines[1].endswith("; made by rule evaluate (job evaluate[model=base])")
    assert err.startswith("error: 2 of ") and err.endswith(
        " outputs damaged or missing (rules sft, evaluate); rebuild them: snakemake --cores N "
        "--force results/ambersafe/sft results/ambersafe/eval/base.json\n"
    )


def test_verify_without_a_crate_says_where_it_comes_from(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "ro-crate-metadata.json: no such file; a finished `snakemake` run writes it" in (
        capsys.readouterr().err
    )

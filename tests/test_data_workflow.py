"""The data stage as Snakemake runs it on the embedded default, and the hub path's contract."""

from __future__ import annotations

import polars as pl

from amber_repro.data import download
from amber_repro.data.synthetic import V0_SCHEMA, synthesize
from amber_repro.provenance.hashing import sha256_file
from amber_repro.storage import read_json


def test_snakemake_builds_the_data_targets_on_the_embedded_default(workdir):
    workdir.snakemake("results/ambersafe/data/manifest.json")
    data = workdir.path / "results" / "ambersafe" / "data"
    manifest = read_json(data / "manifest.json")
    assert manifest["source"]["kind"] == "synthetic"
    # The generator's overlap statistics travel into the manifest: the held-out split is unseen.
    source = read_json(workdir.path / "results" / "raw" / "pku-saferlhf" / "source.json")
    assert manifest["statistics"] == source["statistics"]
    assert manifest["statistics"]
    for split in ("train", "test"):
        raw = pl.read_parquet(
            workdir.path / "results" / "raw" / "pku-saferlhf" / f"{split}.parquet"
        )
        pairs = pl.read_parquet(data / f"pairs-{split}.parquet")
        sft = pl.read_parquet(data / f"sft-{split}.parquet")
        counts = manifest["splits"][split]
        assert counts["rows_read"] == raw.height
        assert (
            counts["rows_kept"]
            == pairs.height
            == raw.filter(pl.col("is_response_0_safe") != pl.col("is_response_1_safe")).height
        )
        assert counts["unique_prompts"] == sft.height == pairs["prompt"].n_unique()
        assert sum(counts["rows_dropped"].values()) + counts["rows_kept"] == counts["rows_read"]
    for path, digest in manifest["outputs"].items():
        assert sha256_file(workdir.path / path) == digest
    # Nothing to do on a second run: the data targets are up to date.
    assert (
        "Nothing to be done"
        in workdir.snakemake("results/ambersafe/data/manifest.json", "-n").stdout
    )


def test_synthetic_data_is_deterministic_and_has_the_variety_the_filter_needs(tmp_path):
    synthesize(tmp_path / "a", seed=3, rows={"train": 600, "test": 100})
    synthesize(tmp_path / "b", seed=3, rows={"train": 600, "test": 100})
    for split in ("train", "test"):
        assert sha256_file(tmp_path / "a" / f"{split}.parquet") == sha256_file(
            tmp_path / "b" / f"{split}.parquet"
        )
    train = pl.read_parquet(tmp_path / "a" / "train.parquet")
    test = pl.read_parquet(tmp_path / "a" / "test.parquet")
    assert dict(train.schema) == V0_SCHEMA
    s0, s1 = pl.col("is_response_0_safe"), pl.col("is_response_1_safe")
    assert train.filter(s0 & s1).height > 0 and train.filter(~s0 & ~s1).height > 0
    assert train.filter(s0 & ~s1).height > 0 and train.filter(~s0 & s1).height > 0
    assert train["prompt"].n_unique() < train.height  # duplicate prompts
    assert train["prompt"].str.contains(r"[^\x00-\x7F]").any()  # non-ASCII text
    lengths = train["prompt"].str.len_chars()
    assert lengths.min() < 60 and lengths.max() > 300  # short and long texts
    assert set(train["prompt"]).isdisjoint(set(test["prompt"]))  # held-out prompts


def test_download_writes_splits_unchanged_and_never_the_token(tmp_path, monkeypatch):
    """The hub path with load_dataset replaced by a local dataset (no hub access here)."""
    import datasets

    rows = {
        "prompt": ["p"],
        "response_0": ["a"],
        "response_1": ["b"],
        "is_response_0_safe": [True],
        "is_response_1_safe": [False],
        "better_response_id": [0],
        "safer_response_id": [0],
    }
    calls = []

    def fake_load_dataset(name, revision, split):
        calls.append((name, revision, split))
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(download, "resolve_dataset_commit", lambda dataset, revision: "abc123")
    source = download.download_dataset(
        "PKU-Alignment/PKU-SafeRLHF", "v0", {"train": "330k_train", "test": "test"}, tmp_path
    )
    assert calls == [
        ("PKU-Alignment/PKU-SafeRLHF", "abc123", "test"),
        ("PKU-Alignment/PKU-SafeRLHF", "abc123", "330k_train"),
    ]
    assert (
        source["revision"] == "v0"
        and source["commit"] == "abc123"
        and source["rows"] == {"train": 1, "test": 1}
    )
    assert pl.read_parquet(tmp_path / "train.parquet").to_dict(as_series=False) == rows
    for path in tmp_path.iterdir():
        assert b"hf_secret_token_value" not in path.read_bytes()


def test_hub_source_schedules_the_download_as_a_local_rule(workdir):
    config = workdir.config
    config["data"]["source"] = "hub"
    workdir.write_config(config)
    dry_run = workdir.snakemake("results/ambersafe/data/manifest.json", "-n").stdout
    assert "rule download_data:" in dry_run or "download_data" in dry_run
    assert "synthesize_data" not in dry_run

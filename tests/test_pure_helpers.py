"""Small pure helpers whose wrong versions the workflow tests would not notice: byte formatting in
full-disk messages, the config merge every preset, overlay and experiment goes through, and the
code inputs of each rule."""

from __future__ import annotations

import copy
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber_repro.config.types import merge
from amber_repro.provenance.codedeps import stage_files
from amber_repro.storage import human_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),  # the unit changes AT 1024, not after it
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1024.0 KiB"),
        (3 * 1024**3 + 512 * 1024**2, "3.5 GiB"),
        (7 * 1024**4, "7.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),  # no unit beyond TiB
    ],
)
def test_human_bytes_uses_binary_units(n, text):
    assert human_bytes(n) == text


def reference_merge(base: dict, changes: dict) -> dict:
    """Mappings merge key by key, at any depth; any other value (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = reference_merge(out[key], value) if both_maps else value
    return out


keys = st.sampled_from(["a", "b", "c"])
leaves = st.integers(0, 3) | st.lists(st.integers(0, 3), max_size=2) | st.none()
trees = st.recursive(
    st.dictionaries(keys, leaves, max_size=3),
    lambda children: st.dictionaries(keys, leaves | children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(base=trees, changes=trees)
def test_merge_changes_only_what_is_named_and_leaves_its_inputs_alone(base, changes):
    base_before, changes_before = copy.deepcopy(base), copy.deepcopy(changes)
    assert merge(base, changes) == reference_merge(base, changes)
    assert base == base_before and changes == changes_before
    assert merge(base, {}) == base and merge({}, changes) == changes


def test_a_stages_code_inputs_follow_an_edit_made_in_the_same_process(tmp_path):
    """Each file's imports are parsed once per process (Snakemake asks for every rule): an edited
    file, even one of the same size, is parsed again."""
    package = tmp_path / "amber_repro"
    package.mkdir()
    for name in ("__init__", "__main__", "a", "b", "c"):
        (package / f"{name}.py").write_text("")
    stage = package / "a.py"
    stage.write_text("from amber_repro import b\n")
    assert stage_files(package, "amber_repro.a") == sorted(
        str(package / f"{name}.py") for name in ("__init__", "__main__", "a", "b")
    )
    stage.write_text("from amber_repro import c\n")  # same size, new content
    os.utime(stage, ns=(stage.stat().st_atime_ns, stage.stat().st_mtime_ns + 1_000_000))
    assert str(package / "c.py") in stage_files(package, "amber_repro.a")
    assert str(package / "b.py") not in stage_files(package, "amber_repro.a")


def test_jobs_are_put_after_the_jobs_making_their_inputs():
    """The crate's job order is the DAG's even where the rule files' order is not: chat_data reads
    the Amber folder that build_tiny_amber, defined after it, makes."""
    from amber_repro.provenance.crate import dag_order

    def job(name, inputs, outputs):
        return {"job": name, "inputs": inputs, "outputs": outputs}

    raw = job("synthesize_chat_data", [], ["raw/a.json"])
    data = job("chat_data", ["raw/a.json", "amber/tokenizer.model"], ["data/c.parquet"])
    amber = job("build_tiny_amber", ["raw/a.json"], ["amber"])
    other = job("synthesize_data", [], ["raw/p.parquet"])
    order = [j["job"] for j in dag_order([raw, data, amber, other])]
    assert order == ["synthesize_chat_data", "build_tiny_amber", "chat_data", "synthesize_data"]
    with pytest.raises(ValueError, match="cycle"):
        dag_order([job("x", ["b"], ["a"]), job("y", ["a"], ["b"])])


def test_every_setting_is_flattened_to_a_dotted_key_once():
    """The crate's FormalParameters: one per leaf; a list or an empty mapping is one value."""
    from amber_repro.provenance.crate_workflow import flat_settings

    config = {"dpo": {"beta": 0.1, "tasks": ["a", "b"]}, "experiments": {}, "preset": "embedded"}
    config["eval"] = {"safety": {"prompts": {"count": 4}}}
    assert flat_settings(config) == {
        "dpo.beta": 0.1,
        "dpo.tasks": ["a", "b"],
        "experiments": {},
        "preset": "embedded",
        "eval.safety.prompts.count": 4,
    }

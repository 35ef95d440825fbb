"""The config is checked before any job starts: each key's type and name, the settings that must
agree with each other, and string values that would run commands in a shell.

The shipped configs themselves, and the values they resolve to, are in test_recipe.py."""

from __future__ import annotations

import typing

import pytest
import yaml
from conftest import REPO, scheduled_jobs
from pydantic import BaseModel

from amber_repro.config.load import config_errors
from amber_repro.config.schema import Config
from amber_repro.config.sections import DPOSettings
from amber_repro.config.types import _is_model, merge

PRESETS = REPO / "config" / "presets"
# The torchrun rules, spelled out (not imported) so that a changed list in the code fails here.
MULTI_NODE = "amberchat, dpo, ref_logps, sft"


# --- each key: unknown, mistyped or given as a string -------------------------------------------


def test_every_key_names_an_unknown_or_mistyped_value():
    config = {
        "preset": "embedded",
        "data": {"colour": "blue", "synthetic": {"seed": "zero"}, "on_malformed": "ignore"},
    }
    assert config_errors(config, PRESETS) == [
        "data.colour: unknown key (allowed here: hub, on_malformed, source, synthetic)",
        "data.on_malformed: Input should be 'error' or 'drop' (got 'ignore')",
        (
            "data.synthetic.seed: Input should be a valid integer, unable to parse string as an "
            "integer (got 'zero')"
        ),
    ]


def test_a_misspelled_key_gets_the_nearest_allowed_one():
    allowed = ", ".join(sorted(DPOSettings.model_fields))
    assert config_errors({"dpo": {"betta": 0.2}}, PRESETS) == [
        f"dpo.betta: unknown key; did you mean beta? (allowed here: {allowed})"
    ]
    assert config_errors({"experiments": {"hot": {"dpo": {"betta": 0.2}}}}, PRESETS) == [
        f"experiments.hot.dpo.betta: unknown key; did you mean beta? (allowed here: {allowed})"
    ]
    assert config_errors({"tokenisation": {}}, PRESETS)[0].startswith(
        "tokenisation: unknown key; did you mean tokenization? (allowed here: amberchat, "
    )


def test_an_unknown_preset_is_named_with_the_allowed_ones():
    assert config_errors({"preset": "tiny"}, PRESETS) == [
        "preset: Input should be 'recipe' or 'embedded' (got 'tiny')"
    ]


def test_strings_from_the_command_line_are_converted_by_type():
    """Snakemake passes `--config 'dpo={beta: 0.2, reference_free: true}'` values as strings."""
    from amber_repro.config.load import resolve

    settings = resolve(
        {
            "preset": "embedded",
            "dpo": {"beta": "0.2", "reference_free": "true", "n_epochs": "2"},
            "eval": {"limit": "null"},
        },
        PRESETS,
    )
    assert (settings.dpo.beta, settings.dpo.reference_free, settings.dpo.n_epochs) == (0.2, True, 2)
    assert settings.eval.limit is None
    assert config_errors({"dpo": {"n_epochs": "2.5"}}, PRESETS)[0].startswith("dpo.n_epochs: ")


# --- Snakemake stops at a bad key before any job -------------------------------------------------


def refused(workdir, changes: dict, *targets: str) -> str:
    """Snakemake's output for `targets` after adding `changes` to config.yaml; asserts it stopped
    before any job ran."""
    config_file = workdir.path / "config" / "config.yaml"
    config_file.write_text(yaml.safe_dump(merge(yaml.safe_load(config_file.read_text()), changes)))
    result = workdir.snakemake(*targets, check=False)
    assert result.returncode != 0
    assert not (workdir.path / "results").exists()
    return result.stdout + result.stderr


def test_snakemake_refuses_a_wrong_key_before_any_job(workdir):
    output = refused(
        workdir, {"data": {"synthetic": {"sede": 1}}}, "results/ambersafe/data/manifest.json"
    )
    assert "data.synthetic.sede: unknown key" in output


def test_snakemake_refuses_a_wrong_type_before_any_job(workdir):
    output = refused(
        workdir,
        {"data": {"synthetic": {"train_rows": "3000 rows"}}},
        "results/ambersafe/data/manifest.json",
    )
    assert "data.synthetic.train_rows: Input should be a valid integer" in output


def test_snakemake_refuses_several_nodes_for_a_rule_that_runs_on_one(workdir):
    output = refused(
        workdir, {"resources": {"evaluate": {"nodes": 2}}}, "results/ambersafe/eval.json"
    )
    assert f"resources.evaluate.nodes: 2, but only {MULTI_NODE} run on several nodes" in output


# --- settings that must agree: checked at validation, not when a job starts -----------------------


def job(gpus: int, nodes: int = 1, cpus: int = 16) -> dict:
    return {"gpus": gpus, "nodes": nodes, "cpus": cpus, "mem_mb": 2000, "runtime_min": 30}


def embedded(changes: dict) -> list[str]:
    return config_errors(merge({"preset": "embedded"}, changes), PRESETS)


def test_the_prompt_must_leave_room_for_the_response():
    assert embedded({"tokenization": {"max_length": 128, "max_prompt_length": 127}}) == []
    assert embedded({"tokenization": {"max_length": 128, "max_prompt_length": 128}}) == [
        "tokenization.max_prompt_length: 128 is not below tokenization.max_length 128 (a "
        "truncated prompt must leave room for the response)"
    ]


@pytest.mark.parametrize(
    "stage, gpus, nodes, processes, where",
    [
        ("dpo", 0, 1, 1, "0 GPUs x 1 node"),  # a CPU job is one process
        ("dpo", 1, 1, 1, "1 GPU x 1 node"),
        ("sft", 2, 2, 4, "2 GPUs x 2 nodes"),
        ("sft", 0, 3, 3, "0 GPUs x 3 nodes"),  # one CPU process per node
    ],
)
def test_a_training_batch_must_split_over_micro_steps_and_processes(
    stage, gpus, nodes, processes, where
):
    """Only the training batch is constrained: the eval loops take a last partial batch, and
    ref-logps shards pairs, not batches, so the other batch sizes (odd ones here) need not divide
    anything."""
    odd_eval_batches = {
        "dpo": {"eval_examples": 7, "eval_batch_size": 32},
        "reference": {"batch_size": 5},
        "eval": {"batch_size": 3},
    }

    def batch(size: int) -> list[str]:
        changes = merge(odd_eval_batches, {stage: {"batch_size": size}})
        changes[stage]["gradient_accumulation_steps"] = 4
        return embedded({**changes, "resources": {stage: job(gpus, nodes), "ref_logps": job(3)}})

    assert batch(4 * processes) == [] and batch(8 * processes) == []
    plural = "process" if processes == 1 else "processes"
    for size in (4 * processes - 1, 4 * processes + 1):
        assert batch(size) == [
            f"{stage}.batch_size: {size} is not divisible by {stage}.gradient_accumulation_steps 4 "
            f"x {processes} {plural} (resources.{stage}: {where})"
        ]


def test_only_the_torchrun_rules_span_nodes():
    for rule in ("sft", "ref_logps", "dpo", "amberchat"):
        assert embedded({"resources": {rule: job(1, nodes=2)}}) == [], rule
    for rule in ("evaluate", "generate", "amberchat_eval", "safety_answers", "safety_judge"):
        assert embedded({"resources": {rule: job(1, nodes=2)}}) == [
            f"resources.{rule}.nodes: 2, but only {MULTI_NODE} run on several nodes"
        ]


def test_each_training_process_gets_a_core():
    assert embedded({"resources": {"ref_logps": job(4, cpus=4)}}) == []
    assert embedded({"resources": {"ref_logps": job(0, cpus=1)}}) == []
    assert embedded({"resources": {"ref_logps": job(4, cpus=3)}}) == [
        "resources.ref_logps.cpus: 3 is fewer than the 4 processes per node "
        "(resources.ref_logps.gpus 4): each process needs a core"
    ]
    # evaluate and generate run one process whatever their GPUs
    assert embedded({"resources": {"evaluate": job(2, cpus=1)}}) == []


def test_the_recipe_on_its_8_gpu_nodes_agrees_with_itself():
    recipe = {"preset": "recipe", "resources": {"sft": job(8, nodes=2, cpus=64)}}
    assert config_errors(recipe, PRESETS) == []
    recipe["resources"]["dpo"] = job(8, nodes=2, cpus=64)  # 32 pairs over 4 x 16 processes
    assert config_errors(recipe, PRESETS) == [
        "dpo.batch_size: 32 is not divisible by dpo.gradient_accumulation_steps 4 x 16 processes "
        "(resources.dpo: 8 GPUs x 2 nodes)"
    ]


@pytest.mark.parametrize(
    "hidden, heads, line",
    [
        (96, 4, None),
        (96, 3, None),  # 32 per head
        (
            98,
            4,
            "base_model.tiny.hidden_size: 98 is not divisible by base_model.tiny.num_heads 4 (each "
            "attention head takes an equal share of the hidden size)",
        ),
        (
            90,
            6,
            "base_model.tiny.hidden_size: 90 / base_model.tiny.num_heads 6 is 15 dimensions per "
            "head, an odd number (rotary position embeddings need an even head size)",
        ),
    ],
)
def test_a_tiny_models_width_splits_into_even_heads(hidden, heads, line):
    """LlamaConfig refuses these when the build job starts; the config check names them first.
    amberchat.amber.source: tiny builds its Amber from the same base_model.tiny sizes."""
    problems = embedded({"base_model": {"tiny": {"hidden_size": hidden, "num_heads": heads}}})
    assert problems == ([line] if line else [])


@pytest.mark.parametrize(
    "bad, good, line",
    [
        (
            {"tokenization": {"max_prompt_length": 500}},
            {"tokenization": {"max_prompt_length": 127}},
            "tokenization.max_prompt_length: 500 is not below tokenization.max_length 128",
        ),
        (
            {
                "dpo": {"batch_size": 15, "gradient_accumulation_steps": 4},
                "resources": {"dpo": job(0)},
            },
            {
                "dpo": {"batch_size": 16, "gradient_accumulation_steps": 4},
                "resources": {"dpo": job(0)},
            },
            "dpo.batch_size: 15 is not divisible by dpo.gradient_accumulation_steps 4 x 1 process "
            "(resources.dpo: 0 GPUs x 1 node)",
        ),
        (
            {"resources": {"sft": job(2, cpus=1)}},
            {"resources": {"sft": job(2, cpus=2)}},
            "resources.sft.cpus: 1 is fewer than the 2 processes per node",
        ),
        (
            {"base_model": {"tiny": {"hidden_size": 98, "num_heads": 4}}},
            {"base_model": {"tiny": {"hidden_size": 96, "num_heads": 4}}},
            "base_model.tiny.hidden_size: 98 is not divisible by base_model.tiny.num_heads 4",
        ),
    ],
    ids=["prompt-length", "dpo-batch", "cpus", "tiny-heads"],
)
def test_a_dry_run_refuses_settings_that_disagree(workdir, bad, good, line):
    """`snakemake -n` stops naming key and values; the nearest good value plans every job."""
    original = yaml.safe_load((workdir.path / "config" / "config.yaml").read_text())
    assert line in refused(workdir, bad, "-n")
    workdir.write_config(merge(original, good))
    assert "sft" in scheduled_jobs(workdir.snakemake("-n").stdout)


# --- shell metacharacters -------------------------------------------------------------------------


def string_settings(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """The key path of every setting that holds a string (or a list of strings), found from the
    types."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += string_settings(annotation, (*prefix, name))
            continue
        args = (
            typing.get_args(annotation) if typing.get_origin(annotation) is list else (annotation,)
        )
        text = [
            a
            for a in args
            if a is str or typing.get_origin(a) in (typing.Literal, typing.Annotated)
        ]
        if text:
            paths.append(((*prefix, name), typing.get_origin(annotation) is list))
    return paths


def at(path: tuple[str, ...], value) -> dict:
    """`value` as a config change at the key `path`."""
    changes: dict = {}
    node = changes
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return changes


def test_the_string_settings_are_found():
    found = {".".join(path) for path, _ in string_settings()}
    assert {
        "data.hub.dataset",
        "data.hub.revision",
        "data.hub.splits.train",
        "base_model.hub.name",
        "base_model.hub.revision",
        "eval.datasets_cache",
        "eval.harness_tasks",
        "container.image",
        "dpo.loss",
        "preset",
    } <= found


@pytest.mark.parametrize(
    "path, is_list", string_settings(), ids=lambda p: ".".join(p) if isinstance(p, tuple) else ""
)
def test_a_setting_full_of_shell_metacharacters_runs_nothing(workdir, path, is_list):
    """Each string setting, set to a value that would run commands if pasted into a shell unquoted:
    Snakemake stops with a config error naming that key, and nothing ran."""
    marker = workdir.path / "pwned"
    value = (
        f"x$(touch {marker})`touch {marker}`;touch {marker}|touch {marker}&&touch {marker} '\"\n"
    )
    changes = at(path, [value] if is_list else value)
    output = refused(workdir, changes, "results/ambersafe/eval.json")
    dotted = ".".join(path)
    assert f"{dotted}: " in output or f"{dotted}.0: " in output, output
    assert not marker.exists()


# --- numbers that are not finite ----------------------------------------------------------------


def float_settings(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """The key path of every setting that holds a float, found from the types."""
    paths = []
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            paths += float_settings(field.annotation, (*prefix, name))
        elif float in (field.annotation, *typing.get_args(field.annotation)):
            paths.append((*prefix, name))
    return paths


def test_the_float_settings_are_found():
    found = {".".join(path) for path in float_settings()}
    expected = "sft.lr sft.max_grad_norm dpo.beta dpo.label_smoothing eval.safety.confidence"
    assert {*expected.split(), "amberchat.train.weight_decay", "amberchat.train.lr"} <= found


@pytest.mark.parametrize("path", float_settings(), ids=".".join)
def test_a_float_setting_must_be_finite(path):
    dotted = ".".join(path)
    for value in (float("inf"), float("-inf"), "inf", "Infinity", float("nan"), "nan"):
        assert embedded(at(path, value)) == [
            f"{dotted}: Input should be a finite number (got {value!r})"
        ], value


def test_an_experiments_float_must_be_finite():
    assert embedded({"experiments": {"hot": {"dpo": {"beta": "inf"}}}}) == [
        "experiments.hot.dpo.beta: Input should be a finite number (got 'inf')"
    ]


# --- values a program would read as options -------------------------------------------------------

OPTION_LIKE = "starts with '-': the program it is passed to would read it as an option"


@pytest.mark.parametrize(
    "path, is_list", string_settings(), ids=lambda p: ".".join(p) if isinstance(p, tuple) else ""
)
def test_no_string_setting_starts_with_a_dash(path, is_list):
    """Shell quoting keeps `-rf` one word, but the program receiving it still reads an option
    (`container.image: --writable-tmpfs`, `eval.datasets_cache: -rf`). Every constrained string
    says why; a choice (a Literal) names its choices."""
    value = "--writable-tmpfs"
    key = ".".join(path) + (".0" if is_list else "")
    problems = embedded(at(path, [value] if is_list else value))
    assert problems == [f"{key}: {OPTION_LIKE} (got {value!r})"] or (
        len(problems) == 1 and problems[0].startswith(f"{key}: Input should be '")
    ), problems


def test_an_experiment_name_or_a_path_is_refused_only_for_a_leading_dash():
    assert embedded({"experiments": {"-rf": {}}}) == [
        f"experiments.-rf.[key]: {OPTION_LIKE} (got '-rf')"
    ]
    changes = {"container": {"image": "images/a-b.sif"}, "eval": {"datasets_cache": "/-x/-y"}}
    assert embedded(changes) == []

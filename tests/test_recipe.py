"""The shipped configs: config/ambersafe-7b.yaml is the published AmberSafe recipe
(docs/recipe.md), the embedded default shrinks sizes but keeps the recipe's semantics, and every
shipped config and preset validates.

How a bad config is refused is in test_config_validation.py; how settings become a stage's flags
is in test_stage_flags.py."""

from __future__ import annotations

import json

import jsonschema
import yaml
from conftest import REPO

from amber_repro.config.load import config_errors, resolve
from amber_repro.config.schema import Config
from amber_repro.config.types import merge

PRESETS = REPO / "config" / "presets"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def resolved(*names: str) -> Config:
    config: dict = {}
    for name in names:
        config = merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return resolve(config, PRESETS)


# --- the values a run resolves to -----------------------------------------------------------------


def test_the_7b_config_resolves_to_the_published_recipe():
    """The values of docs/recipe.md (LLM360's sft.sh and dpo.sh, the DPO reference's defaults)."""
    recipe = resolved("config.yaml", "ambersafe-7b.yaml")
    sft, dpo = recipe.sft, recipe.dpo
    assert (recipe.data.source, recipe.data.hub.dataset, recipe.data.hub.revision) == (
        "hub",
        "PKU-Alignment/PKU-SafeRLHF",
        "v0",
    )
    assert (recipe.base_model.source, recipe.base_model.hub.name) == ("hub", "LLM360/AmberChat")
    assert (sft.lr, dpo.lr) == (2e-7, 5e-7)
    assert (dpo.beta, dpo.loss, dpo.label_smoothing, dpo.reference_free) == (
        0.1,
        "sigmoid",
        0.0,
        False,
    )
    assert (sft.batch_size, dpo.batch_size) == (64, 32)
    assert (sft.gradient_accumulation_steps, dpo.gradient_accumulation_steps) == (2, 4)
    assert (sft.n_epochs, dpo.n_epochs) == (3, 3)
    assert (recipe.tokenization.max_length, recipe.tokenization.max_prompt_length) == (512, 256)
    for stage in (sft, dpo):
        assert (stage.warmup_steps, stage.max_grad_norm, stage.seed) == (150, 10.0, 0)
        assert (stage.precision, stage.gradient_checkpointing) == ("float32", False)
    assert recipe.reference.precision == "float16"
    assert (dpo.eval_examples, dpo.eval_batch_size) == (256, 32)


def test_the_recipes_optimizer_is_rmsprop_with_the_configured_rate():
    """The optimizer is not a setting: both stages always use the reference's RMSprop."""
    import torch

    from amber_repro.training.schedule import build_optimizer

    optimizer = build_optimizer(torch.nn.Linear(2, 2), Config().dpo.lr)
    assert type(optimizer) is torch.optim.RMSprop
    assert optimizer.param_groups[0]["lr"] == 5e-7


def test_the_embedded_default_shrinks_sizes_but_keeps_the_recipes_semantics():
    embedded, recipe = resolved("config.yaml"), Config()
    assert (embedded.data.source, embedded.base_model.source) == ("synthetic", "tiny")
    assert embedded.sft.lr != recipe.sft.lr and embedded.tokenization.max_length < 512
    for key in (
        "loss",
        "beta",
        "label_smoothing",
        "reference_free",
        "max_grad_norm",
        "precision",
        "seed",
    ):
        assert getattr(embedded.dpo, key) == getattr(recipe.dpo, key), key


def test_the_7b_overlay_holds_only_what_differs_from_the_defaults():
    assert yaml.safe_load((REPO / "config" / "ambersafe-7b.yaml").read_text()) == {
        "preset": "recipe"
    }


# --- the shipped configs validate -----------------------------------------------------------------


def test_shipped_configs_are_valid():
    assert config_errors(load("config.yaml"), PRESETS) == []
    assert config_errors(merge(load("config.yaml"), load("ambersafe-7b.yaml")), PRESETS) == []


def test_shipped_configs_and_preset_follow_the_generated_schema():
    schema = json.loads((REPO / "config" / "schema.json").read_text())
    for name in ("config.yaml", "ambersafe-7b.yaml", "presets/embedded.yaml"):
        jsonschema.validate(load(name), schema)

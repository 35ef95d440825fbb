# Helpers of the named experiments (rules/experiments.smk, amber_repro/config/experiments.py):
# DPO variants that share the data, the SFT checkpoint and the reference log-probs.
import re

from amber_repro.config.experiments import (
    DEFAULT,
    experiment_names,
    experiment_settings,
)

EXPERIMENTS_DIR = f"{EVAL_DIR}/experiments"
SWEEP = f"{EVAL_DIR}/sweep.json"


def experiment_name_pattern():
    """A regex for the {experiment} wildcard: exactly the configured names (none: matches nothing)."""
    names = [re.escape(name) for name in config["experiments"]]
    return "|".join(names) if names else "(?!)"


def experiment_outputs(name):
    """An experiment's DPO checkpoint, eval.json and generations; the default keeps the usual paths."""
    if name == DEFAULT:
        return {
            "dpo": DPO_MODEL,
            "eval": f"{EVAL_DIR}/eval.json",
            "generations": f"{EVAL_DIR}/generations.md",
        }
    folder = f"{EXPERIMENTS_DIR}/{name}"
    return {
        "dpo": f"{folder}/dpo",
        "eval": f"{folder}/eval.json",
        "generations": f"{folder}/generations.md",
    }


def experiment_dpo_flags(wildcards):
    dpo, _ = experiment_settings(SETTINGS, wildcards.experiment)
    return " ".join(
        [
            settings_flags(dpo),
            stage_flags("tokenization", "reproducibility", ("data", ["on_malformed"])),
        ]
    )


def experiment_eval_flags(wildcards, input):
    """The evaluation of an experiment's DPO model: its own eval and dpo settings."""
    dpo, evaluation = experiment_settings(SETTINGS, wildcards.experiment)
    return " ".join(
        [
            settings_flags(
                evaluation, ["batch_size", "bootstrap_iters", "limit", "precision"]
            ),
            shlex.join(["--ref-logps", input.ref_logps]),
            settings_flags(dpo, ["beta", "loss"]),
            stage_flags(("data", ["on_malformed"]), "tokenization", "reproducibility"),
        ]
    )


def experiment_generation_flags(wildcards):
    _, evaluation = experiment_settings(SETTINGS, wildcards.experiment)
    return " ".join(
        [settings_flags(evaluation.generations), stage_flags("reproducibility")]
    )


def experiment_dpo_model(wildcards):
    return experiment_outputs(wildcards.experiment)["dpo"]


def experiment_generation_models(wildcards):
    return shlex.join(
        [f"--model=sft={SFT_MODEL}", f"--model=dpo={experiment_dpo_model(wildcards)}"]
    )


def experiment_eval_inputs(wildcards):
    """The DPO model's evaluation inputs, with the experiment's DPO checkpoint as the model."""
    return {**eval_inputs(wildcards), "model": experiment_dpo_model(wildcards)}


def sweep_inputs(wildcards):
    """Every experiment's eval.json and DPO checkpoint, the default first."""
    names = experiment_names(SETTINGS)
    return {
        "evals": [experiment_outputs(name)["eval"] for name in names],
        "models": [experiment_outputs(name)["dpo"] for name in names],
        "code": stage_code("sweep"),
    }


def sweep_flags():
    flags = []
    for name in experiment_names(SETTINGS):
        outputs = experiment_outputs(name)
        flags += ["--experiment", name, outputs["eval"], outputs["dpo"]]
    return shlex.join(flags)


def experiment_targets():
    """With experiments configured: each one's outputs and the sweep's comparison."""
    if not config["experiments"]:
        return []
    outputs = [
        experiment_outputs(name)[kind]
        for name in config["experiments"]
        for kind in ("dpo", "generations")
    ]
    return [*outputs, SWEEP]

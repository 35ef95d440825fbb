# Helpers shared by the rules: config validation, paths, and what each stage's code is.
import json
import os
import re
import shlex
import shutil
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import expand
from snakemake.iocontainers import Wildcards
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from amber_repro.codedeps import stage_files
from amber_repro.configuration import resolve, settings_flags
from amber_repro.errors import ConfigError
from amber_repro.experiments import DEFAULT, experiment_names, experiment_settings
from amber_repro.launch import launch_prefix
from amber_repro.provenance import run_context_env, sha256_file

PRESETS_DIR = Path(workflow.basedir) / "config" / "presets"


def check_config_files():
    """`--configfile` takes several files: a target written after it is read as a config file."""
    for path in workflow.overwrite_configfiles:
        relative = Path(os.path.relpath(path))
        if relative.parts[:1] == ("results",) or relative.suffix not in (
            ".yaml",
            ".yml",
            ".json",
        ):
            raise WorkflowError(
                f"{relative} was given as a config file: --configfile takes several files, so "
                "write --configfile=FILE, or put the targets before --configfile"
            )


check_config_files()
try:
    # The recipe's defaults <- the preset <- config.yaml, overlays and --config, typed and checked
    # (strings from --config are converted); the rules read the resolved values.
    SETTINGS = resolve(config, PRESETS_DIR)
except ConfigError as error:
    raise WorkflowError(
        "invalid config (files: {}):\n  {}".format(
            ", ".join(map(str, workflow.configfiles)),
            str(error).replace("\n", "\n  "),
        )
    )
config.clear()
config.update(SETTINGS.model_dump(mode="json"))

# Every job records which code and config made it (provenance.run_context): commit, dirty flag and
# config hash, computed once here. A value the checkout cannot give (no git on the machine) may come
# from the environment.
for name, value in run_context_env(config, Path(workflow.basedir)).items():
    if value != "null" or name not in os.environ:
        os.environ[name] = value

SPLITS = ["train", "test"]
RAW_DIR = "results/raw/pku-saferlhf"
DATA_DIR = "results/ambersafe/data"
BASE_MODEL = "results/base_model"
SFT_MODEL = "results/ambersafe/sft"
REF_LOGPS_DIR = "results/ambersafe/ref_logps"
DPO_MODEL = "results/ambersafe/dpo"
EVAL_DIR = "results/ambersafe"
MODEL_DIRS = {"base": BASE_MODEL, "sft": SFT_MODEL, "dpo": DPO_MODEL}
# Resumable checkpoints live outside the outputs: Snakemake deletes a job's outputs before it runs.
STATE_DIR = "results/ambersafe/.state"
PACKAGE_DIR = Path(workflow.basedir) / "amber_repro"


def relative(paths):
    """Paths as Snakemake records them: relative to the working directory, so that a moved or
    restored project keeps its record of what is up to date."""
    return [os.path.relpath(path) for path in paths]


def stage_code(*modules):
    """The package files a stage runs (found from its imports), as inputs: editing one reruns that
    stage and what depends on it, nothing else."""
    return relative(stage_files(PACKAGE_DIR, *(f"amber_repro.{m}" for m in modules)))


def folder_of(output_name):
    """A params function giving the folder of one named output (so no path prefix is hard-coded)."""

    def folder(wildcards, output):
        return str(Path(output[output_name]).parent)

    return folder


def raw_files():
    return expand(f"{RAW_DIR}/{{split}}.parquet", split=SPLITS)


def hub_split_flags():
    splits = config["data"]["hub"]["splits"]
    return shlex.join(f"--split={ours}={theirs}" for ours, theirs in splits.items())


def eval_models():
    """The checkpoints config["eval"]["models"] names, as {name: folder}."""
    return {name: MODEL_DIRS[name] for name in config["eval"]["models"]}


def eval_inputs(wildcards):
    """Inputs of the eval job: each model, the held-out pairs and their reference log-probs, and the
    prepared datasets cache when harness tasks are configured."""
    inputs = {
        **eval_models(),
        "pairs": f"{DATA_DIR}/pairs-test.parquet",
        "ref_logps": f"{REF_LOGPS_DIR}/test.parquet",
        "code": stage_code("evaluation"),
        "image": image_input(),
    }
    if config["eval"]["harness_tasks"]:
        inputs["datasets"] = f"{EVAL_DIR}/eval_datasets.json"
    return inputs


def model_flags(names):
    return shlex.join(f"--model={name}={MODEL_DIRS[name]}" for name in names)


def task_flags():
    return shlex.join(f"--task={task}" for task in config["eval"]["harness_tasks"])


def stage_flags(*sections):
    """The flags of a stage: the named config sections' settings, generated from their typed
    definitions and shell-quoted. A section is a name ("dpo") or (name, [keys]) for some keys only.
    """
    flags = []
    for section in sections:
        name, keys = section if isinstance(section, tuple) else (section, None)
        settings = SETTINGS
        for part in name.split("."):
            settings = getattr(settings, part)
        flags.append(settings_flags(settings, keys))
    return " ".join(filter(None, flags))


def eval_flags():
    return stage_flags(
        ("eval", ["batch_size", "bootstrap_iters", "limit"]),
        ("dpo", ["beta", "loss"]),
        ("data", ["on_malformed"]),
        "tokenization",
        "reproducibility",
    )


def final_targets():
    """What `rule all` builds. The checkpoints and reference log-probs are listed too, although
    later stages consume them: users come for them, so a deleted one must be rebuilt, not left
    missing as an intermediate Snakemake no longer needs."""
    return [
        SFT_MODEL,
        DPO_MODEL,
        *expand(f"{REF_LOGPS_DIR}/{{split}}.parquet", split=SPLITS),
        *experiment_targets(),
        CRATE,
        f"{EVAL_DIR}/eval.json",
        f"{EVAL_DIR}/generations.md",
        f"{EVAL_DIR}/report/sft_curves.png",
        f"{EVAL_DIR}/report/dpo_curves.png",
        f"{EVAL_DIR}/report/eval_table.html",
    ]


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


def job_resource(rule_name, key):
    """One of config["resources"][rule]: gpus, cpus, mem_mb, runtime_min."""
    return config["resources"][rule_name][key]


MULTI_NODE_RULES = {"sft", "ref_logps", "dpo"}


def nodes_of(rule_name):
    nodes = config["resources"][rule_name]["nodes"]
    if nodes > 1 and rule_name not in MULTI_NODE_RULES:
        raise WorkflowError(
            f"resources.{rule_name}.nodes: {nodes}, but only {', '.join(sorted(MULTI_NODE_RULES))} "
            "run on several nodes"
        )
    return nodes


def gpu_job_resources(rule_name):
    """What a GPU rule asks SLURM for (config["resources"][rule]). On one node, `gpu` (sbatch --gpus).
    On several, GPUs per node as GRES (--gpus would be the job's total), and `mpi` with one task per
    node: the SLURM executor then runs the rule's shell in the batch step rather than inside a one-task
    srun, so the rule's own srun (see launcher) can start a launcher on every node."""
    wanted = config["resources"][rule_name]
    resources = {
        "mem_mb": wanted["mem_mb"],
        "runtime": wanted["runtime_min"],
        "nodes": nodes_of(rule_name),
    }
    if resources["nodes"] == 1:
        return {**resources, "gpu": wanted["gpus"]}
    if wanted["gpus"]:
        resources["gres"] = f"gpu:{wanted['gpus']}"
    # tasks_per_gpu 0: the executor would otherwise pass `tasks` on as --ntasks-per-gpu.
    return {**resources, "mpi": "srun", "tasks": resources["nodes"], "tasks_per_gpu": 0}


def launcher(rule_name):
    """`python`, or torchrun with one process per GPU on each of the rule's nodes."""
    wanted = config["resources"][rule_name]
    return launch_prefix(
        max(1, wanted["gpus"]),
        nodes_of(rule_name),
        wanted["cpus"],
        node_container_exec(),
    )


GPU_RULES = {"sft", "ref_logps", "dpo", "evaluate", "generate"}


def runs_in_apptainer():
    return DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method


def image_input():
    """The local image file, an input of each GPU rule when those run in Apptainer, so that a rebuilt
    or swapped .sif reruns them. (A registry reference is part of Snakemake's software-env trigger;
    pin it by digest.)"""
    image = config["container"]["image"]
    if not runs_in_apptainer() or "://" in image:
        return []
    return [image]


def gpu_container(rule_name):
    """The Apptainer image of a GPU rule: config["container"]["image"], a local .sif path (relative to
    the working directory) or a registry URI. Snakemake uses it only with
    --software-deployment-method apptainer; CPU-only rules have no container. A multi-node rule has
    none either: its launcher (srun) runs on the host and starts the image on each node.
    """
    if nodes_of(rule_name) > 1:
        return None
    return config["container"]["image"]


def node_container_exec():
    """`apptainer exec` as Snakemake would run the image (home = working directory, the profile's
    apptainer-args), for the launcher to put before torchrun on each node; empty without Apptainer.
    """
    if not runs_in_apptainer():
        return ""
    return 'apptainer exec --home "$PWD" {} {}'.format(
        workflow.deployment_settings.apptainer_args,
        shlex.quote(config["container"]["image"]),
    )


# The image itself (rules/container.smk).
REPO_DIR = Path(workflow.basedir)


def package_files():
    """Every file of the package, as %files copies it into the image: editing one makes the image stale."""
    return relative(
        sorted(
            path
            for path in PACKAGE_DIR.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        )
    )


def build_image(input, output, log):
    """`apptainer build` run from the repository root (the definition's %files are relative to it), with
    the lock's sha256 as the LOCK_SHA256 build argument (the image's label, checked in %post); then a
    `sha256sum -c` record of the image, the definition and the lock, paths relative to the working
    directory."""
    if shutil.which("apptainer") is None:
        raise WorkflowError(
            "build_container needs Apptainer >= 1.2 on PATH (see the README, 'Containers')"
        )
    build = [
        "apptainer",
        "build",
        "--force",
        "--build-arg",
        f"LOCK_SHA256={sha256_file(input.lock)}",
        os.path.abspath(output.sif),
        os.path.relpath(input.definition, REPO_DIR),
    ]
    shell(
        f"cd {shlex.quote(str(REPO_DIR))} && {shlex.join(build)} "
        f"> {shlex.quote(os.path.abspath(log[0]))} 2>&1"
    )
    with open(output.record, "w") as record:
        for path in (output.sif, input.definition, input.lock):
            record.write(f"{sha256_file(path)}  {os.path.relpath(path)}\n")


# The provenance crate (rules/provenance.smk).
NOT_JOBS = {"all", "build_container", "provenance"}
CRATE = "results/ro-crate-metadata.json"


def not_code(paths):
    """Paths other than the package's files (the crate records the commit instead)."""
    package = PACKAGE_DIR.resolve()
    return [
        str(path) for path in paths if not Path(path).resolve().is_relative_to(package)
    ]


def job_wildcards(step):
    """Each job of a rule, as its wildcards: ref_logps runs once per split, an experiment's rules
    once per configured experiment, the others once."""
    if "split" in step.wildcard_names:
        return [{"split": split} for split in SPLITS]
    if "experiment" in step.wildcard_names:
        return [{"experiment": name} for name in config["experiments"]]
    return [{}]


def dag_jobs():
    """Every job of the DAG in order (raw data first, report last), with its inputs, outputs, log and
    the image it runs in: the crate's record of which job made which file."""
    jobs = []
    for step in workflow.rules:
        if step.name in NOT_JOBS:
            continue
        for values in job_wildcards(step):
            wildcards = Wildcards(fromdict=values)
            label = ",".join(f"{k}={v}" for k, v in values.items())
            jobs.append(
                {
                    "job": f"{step.name}[{label}]" if label else step.name,
                    "rule": step.name,
                    # Snakemake's own expansion of the rule for these wildcards.
                    "inputs": not_code(step.expand_input(wildcards)[0]),
                    "outputs": not_code(step.expand_output(wildcards)[0]),
                    "log": str(step.expand_log(wildcards)[0]),
                    "benchmark": (
                        str(step.expand_benchmark(wildcards))
                        if step.benchmark
                        else None
                    ),
                    "container": (
                        config["container"]["image"]
                        if runs_in_apptainer() and step.name in GPU_RULES
                        else None
                    ),
                }
            )
    return jobs


def dag_outputs(jobs):
    return sorted({path for job in jobs for path in job["outputs"]})


# Named experiments (rules/experiments.smk, amber_repro/experiments.py): DPO variants that share the
# data, the SFT checkpoint and the reference log-probs.
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


def experiment_eval_flags(wildcards):
    dpo, evaluation = experiment_settings(SETTINGS, wildcards.experiment)
    return " ".join(
        [
            settings_flags(evaluation, ["batch_size", "bootstrap_iters", "limit"]),
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


def experiment_model_flag(wildcards):
    return shlex.join([f"--model=dpo={experiment_dpo_model(wildcards)}"])


def experiment_generation_models(wildcards):
    return shlex.join(
        [f"--model=sft={SFT_MODEL}", f"--model=dpo={experiment_dpo_model(wildcards)}"]
    )


def experiment_eval_inputs(wildcards):
    """The default evaluation's inputs, with the experiment's DPO checkpoint as the only model."""
    inputs = {
        key: value
        for key, value in eval_inputs(wildcards).items()
        if key not in MODEL_DIRS
    }
    return {**inputs, "dpo": experiment_dpo_model(wildcards)}


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

# What the rules share: config loading and validation, paths, the job registry's resources and
# launcher, the container, and generic helpers (stage code, flags). Each stage's own helpers are in
# rules/<stage>_common.smk, included right before its rules.
import os
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import expand
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from amber_repro.__main__ import STAGES
from amber_repro.provenance.codedeps import stage_files
from amber_repro.config.load import resolve
from amber_repro.config.cli import settings_flags
from amber_repro.errors import ConfigError
from amber_repro.training.launch import launch_prefix
from amber_repro.provenance.run_context import run_context_env
from amber_repro.config.jobs import SIGTERM_WARNING_SECONDS, job, rules

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


def config_files_in_order():
    """The config files in the order they apply: the Snakefile's `configfile:` (Snakemake lists it
    after the --configfile overlays it loaded first), then the overlays as given."""
    overlays = [Path(path).absolute() for path in workflow.overwrite_configfiles]
    defaults = [
        path for path in workflow.configfiles if Path(path).absolute() not in overlays
    ]
    return [os.path.relpath(path) for path in [*defaults, *overlays]]


check_config_files()
try:
    # The recipe's defaults <- the preset <- config.yaml, overlays and --config, typed and checked
    # (strings from --config are converted); the rules read the resolved values.
    SETTINGS = resolve(config, PRESETS_DIR)
except ConfigError as error:
    raise WorkflowError(
        "invalid config (files: {}):\n  {}".format(
            ", ".join(config_files_in_order()),
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
# AmberChat: Amber -> AmberChat (rules/amberchat_data.smk, rules/amberchat_model.smk).
CHAT_DIR = "results/amberchat"
CHAT_RAW_DIR = "results/raw/amberchat"
CHAT_DATA_DIR = f"{CHAT_DIR}/data"
CHAT_AMBER_DIR = f"{CHAT_DIR}/amber"
CHAT_MODEL = f"{CHAT_DIR}/model"
CHAT_EVAL = f"{CHAT_DIR}/eval.json"
CHAT_STATE_DIR = f"{CHAT_DIR}/.state"
if config["base_model"]["source"] == "amberchat":
    # AmberSafe starts from this workflow's own AmberChat: Amber -> AmberChat -> AmberSafe.
    BASE_MODEL = CHAT_MODEL
MODEL_DIRS = {"base": BASE_MODEL, "sft": SFT_MODEL, "dpo": DPO_MODEL}
# The generation-based safety evaluation (rules/safety.smk).
SAFETY_DIR = f"{EVAL_DIR}/safety"
SAFETY_ANSWERS = f"{SAFETY_DIR}/answers.parquet"
SAFETY_VERDICTS = f"{SAFETY_DIR}/verdicts.json"
SAFETY_PROMPTS_DIR = "results/raw/safety-prompts"
JUDGE_MODEL = "results/judge_model"
# Resumable checkpoints live outside the outputs: Snakemake deletes a job's outputs before it runs.
STATE_DIR = "results/ambersafe/.state"
PACKAGE_DIR = Path(workflow.basedir) / "amber_repro"


def relative(paths):
    """Paths as Snakemake records them: relative to the working directory, so that a moved or
    restored project keeps its record of what is up to date."""
    return [os.path.relpath(path) for path in paths]


def stage_code(stage):
    """The package files a stage (`python -m amber_repro <stage>`) runs, found from the imports of
    its module in STAGES, as inputs: editing one reruns that stage and what depends on it, nothing
    else."""
    return relative(stage_files(PACKAGE_DIR, f"amber_repro.{STAGES[stage].module}"))


def folder_of(output_name):
    """A params function giving the folder of one named output (so no path prefix is hard-coded)."""

    def folder(wildcards, output):
        return str(Path(output[output_name]).parent)

    return folder


def model_flags(names):
    return shlex.join(f"--model={name}={MODEL_DIRS[name]}" for name in names)


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


# What kind of job each rule is (GPU or CPU, submit host or cluster, nodes, resumable, its
# resources) comes from one table, amber_repro/config/jobs.py; the helpers below turn an
# entry into the rule's directives.


def job_size(rule_name):
    """The rule's `resources.<name>` entry (its own, or the one it shares), or None."""
    key = job(rule_name).resources
    return config["resources"][key] if key else None


def job_threads(rule_name):
    """CPUs per node (also the local thread count); 1 for a rule with no resources entry."""
    size = job_size(rule_name)
    return size["cpus"] if size else 1


def nodes_of(rule_name):
    """Validated with the config (settings.conflicts): only multi-node rules have nodes > 1."""
    size = job_size(rule_name)
    return size["nodes"] if size else 1


def job_resources(rule_name):
    """What SLURM is asked for, from the rule's resources entry (none: the profile's defaults).
    A GPU rule on one node asks for `gpu` (sbatch --gpus). On several, GPUs per node as GRES (--gpus
    would be the job's total), and `mpi` with one task per node: the SLURM executor then runs the
    rule's shell in the batch step rather than inside a one-task srun, so the rule's own srun (see
    launcher) can start a launcher on every node. A resumable rule gets SIGTERM before its time
    limit (slurm_extra), to checkpoint and be resumed by the retry."""
    size = job_size(rule_name)
    if size is None:
        return {}
    resources = {
        "mem_mb": size["mem_mb"],
        "runtime": size["runtime_min"],
        "nodes": size["nodes"],
    }
    if job(rule_name).resumable:
        resources["slurm_extra"] = f"--signal=TERM@{SIGTERM_WARNING_SECONDS}"
    if not job(rule_name).gpu:
        return resources
    if resources["nodes"] == 1:
        return {**resources, "gpu": size["gpus"]}
    if size["gpus"]:
        resources["gres"] = f"gpu:{size['gpus']}"
    # tasks_per_gpu 0: the executor would otherwise pass `tasks` on as --ntasks-per-gpu.
    return {**resources, "mpi": "srun", "tasks": resources["nodes"], "tasks_per_gpu": 0}


def is_local(rule_name):
    """Downloads and bookkeeping run on the submit host: compute nodes may have no network."""
    return job(rule_name).local


def launcher(rule_name):
    """`python`, or torchrun with one process per GPU on each of the rule's nodes."""
    size = job_size(rule_name)
    return launch_prefix(
        max(1, size["gpus"]),
        nodes_of(rule_name),
        size["cpus"],
        node_container_exec(),
    )


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


def job_container(rule_name):
    """The Apptainer image of a GPU rule: config["container"]["image"], a local .sif path (relative to
    the working directory) or a registry URI. Snakemake uses it only with
    --software-deployment-method apptainer; CPU-only rules have no container. A multi-node rule has
    none either: its launcher (srun) runs on the host and starts the image on each node.
    """
    if not job(rule_name).gpu or nodes_of(rule_name) > 1:
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

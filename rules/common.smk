# Helpers shared by the rules: config validation, paths, and what each stage's code is.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from amber_repro.codedeps import stage_files
from amber_repro.configuration import cli_flags, config_errors

CONFIG_SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"

try:
    validate(config, schema=str(CONFIG_SCHEMA), set_default=False)
except WorkflowError:
    # Snakemake reports the first violation with the whole schema; name every bad key instead.
    raise WorkflowError(
        "invalid config (files: {}):\n  {}".format(
            ", ".join(map(str, workflow.configfiles)),
            "\n  ".join(config_errors(config, CONFIG_SCHEMA)),
        )
    )

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


def stage_code(*modules):
    """The package files a stage runs (found from its imports), as inputs: editing one reruns that
    stage and what depends on it, nothing else."""
    return stage_files(PACKAGE_DIR, *(f"amber_repro.{m}" for m in modules))


def folder_of(output_name):
    """A params function giving the folder of one named output (so no path prefix is hard-coded)."""

    def folder(wildcards, output):
        return str(Path(output[output_name]).parent)

    return folder


def raw_files():
    return expand(f"{RAW_DIR}/{{split}}.parquet", split=SPLITS)


def data_targets():
    return expand(
        f"{DATA_DIR}/{{kind}}-{{split}}.parquet", kind=["pairs", "sft"], split=SPLITS
    ) + [f"{DATA_DIR}/manifest.json"]


def hub_split_flags():
    splits = config["data"]["hub"]["splits"]
    return " ".join(f"--split {ours}={theirs}" for ours, theirs in splits.items())


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
    }
    if config["eval"]["harness_tasks"]:
        inputs["datasets"] = f"{EVAL_DIR}/eval_datasets.json"
    return inputs


def model_flags(names):
    return " ".join(f"--model {name}={MODEL_DIRS[name]}" for name in names)


def task_flags():
    return " ".join(f"--task {task}" for task in config["eval"]["harness_tasks"])


def eval_flags():
    settings = {k: config["eval"][k] for k in ("batch_size", "bootstrap_iters")}
    if config["eval"]["limit"] is not None:
        settings["limit"] = config["eval"]["limit"]
    dpo = {"beta": config["dpo"]["beta"], "loss": config["dpo"]["loss"]}
    return cli_flags(settings, dpo, config["tokenization"])


def final_targets():
    return [
        f"{EVAL_DIR}/eval.json",
        f"{EVAL_DIR}/generations.md",
        f"{EVAL_DIR}/report/sft_curves.png",
        f"{EVAL_DIR}/report/dpo_curves.png",
        f"{EVAL_DIR}/report/eval_table.html",
    ]


def job_resource(rule_name, key):
    """One of config["resources"][rule]: gpus, cpus, mem_mb, runtime_min."""
    return config["resources"][rule_name][key]

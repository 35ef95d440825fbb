# Helpers of the evaluation (rules/eval.smk; the experiments' evaluations reuse them): each model's
# inputs and flags, and the parts eval.json is summarised from.


def eval_part(model, folder=EVAL_DIR):
    """One model's evaluation (rules/eval.smk, rule evaluate)."""
    return f"{folder}/eval/{model}.json"


def eval_inputs(wildcards):
    """Inputs of one model's evaluation: the checkpoint, the held-out pairs (and for the DPO model
    their reference log-probs, for its implicit rewards), and the prepared datasets cache when
    harness tasks are configured."""
    inputs = {
        "model": MODEL_DIRS[wildcards.model],
        "pairs": f"{DATA_DIR}/pairs-test.parquet",
        "code": stage_code("eval"),
        "image": image_input(),
    }
    if wildcards.model == "dpo":
        inputs["ref_logps"] = f"{REF_LOGPS_DIR}/test.parquet"
    if config["eval"]["harness_tasks"]:
        inputs["datasets"] = f"{EVAL_DIR}/eval_datasets.json"
    return inputs


def eval_model_flag(wildcards, input):
    return shlex.join([f"--model={wildcards.model}={input.model}"])


def eval_flags(wildcards, input):
    """The evaluation's settings; the DPO settings and reference log-probs only for the DPO model
    (its implicit rewards), so that a new beta re-evaluates that model alone."""
    flags = stage_flags(
        ("eval", ["batch_size", "bootstrap_iters", "limit", "precision"]),
        ("data", ["on_malformed"]),
        "tokenization",
        "reproducibility",
    )
    if wildcards.model != "dpo":
        return flags
    rewards = shlex.join(["--ref-logps", input.ref_logps])
    return f"{flags} {rewards} {stage_flags(('dpo', ['beta', 'loss']))}"


def eval_parts():
    return [eval_part(model) for model in config["eval"]["models"]]


def part_flags(wildcards, input):
    return shlex.join(f"--part={path}" for path in input.parts)


def task_flags():
    return shlex.join(f"--task={task}" for task in config["eval"]["harness_tasks"])

# Helpers of the generation-based safety evaluation (rules/safety.smk): the harmful prompts, the
# models that answer them and what the judge reads.


def eval_models():
    """The checkpoints config["eval"]["models"] names, as {name: folder}."""
    return {name: MODEL_DIRS[name] for name in config["eval"]["models"]}


def safety_prompts():
    """The harmful prompts: the downloaded prompts dataset, or the held-out pairs' prompts."""
    if config["eval"]["safety"]["prompts"]["source"] == "hub":
        return f"{SAFETY_PROMPTS_DIR}/prompts.parquet"
    return f"{DATA_DIR}/pairs-test.parquet"


def safety_answer_inputs(wildcards):
    return {
        **eval_models(),
        "prompts": safety_prompts(),
        "code": stage_code("safety-answers"),
        "image": image_input(),
    }


def safety_judge_data():
    """What the judge reads besides the answers: its downloaded model, or the raw labelled splits
    the classifier is trained and scored on."""
    if config["eval"]["safety"]["judge"]["kind"] == "beaver-dam":
        return {"judge_model": JUDGE_MODEL}
    return {"train": f"{RAW_DIR}/train.parquet", "test": f"{RAW_DIR}/test.parquet"}


def safety_judge_inputs(wildcards):
    return {
        "answers": SAFETY_ANSWERS,
        **safety_judge_data(),
        "code": stage_code("safety-judge"),
        "image": image_input(),
    }


def safety_judge_flags():
    return shlex.join(
        f"--{name.replace('_', '-')}={path}"
        for name, path in safety_judge_data().items()
    )

# Helpers of the AmberChat rules (rules/amberchat_data.smk, rules/amberchat_model.smk): which
# targets, inputs and flags Amber -> AmberChat has. Its paths are in rules/common.smk with the rest.

CHAT_SOURCES = ["sharegpt", "wizardlm"]  # prepare_evol_datamix.py's order
# The AmberChat jobs: in the crate (and rule all) only when AmberSafe starts from AmberChat.
CHAT_RULES = rules(part="amberchat")


def amberchat_targets():
    """AmberChat's model and evaluation, when AmberSafe starts from them (base_model.source:
    amberchat); otherwise build them by name: snakemake results/amberchat/eval.json."""
    if config["base_model"]["source"] != "amberchat":
        return []
    return [CHAT_MODEL, CHAT_EVAL]


def amberchat_task_flags():
    return shlex.join(
        f"--task={task}" for task in config["amberchat"]["eval"]["harness_tasks"]
    )


def amberchat_eval_inputs(wildcards):
    """Amber and AmberChat, the held-out conversations, and the harness datasets when configured."""
    inputs = {
        "amber": CHAT_AMBER_DIR,
        "amberchat": CHAT_MODEL,
        "conversations": f"{CHAT_DATA_DIR}/conversations-test.parquet",
        "code": stage_code("chat-eval"),
        "image": image_input(),
    }
    if config["amberchat"]["eval"]["harness_tasks"]:
        inputs["datasets"] = f"{CHAT_DIR}/eval_datasets.json"
    return inputs


# The AmberChat conversations (rules/amberchat_data.smk).


def chat_raw(source):
    """A source's raw JSON file and its provenance record."""
    return {
        source: f"{CHAT_RAW_DIR}/{source}.json",
        f"{source}_record": f"{CHAT_RAW_DIR}/{source}.source.json",
    }


def chat_raw_files():
    """Every source's raw file and record, named {source} and {source}_record."""
    return {
        key: path for source in CHAT_SOURCES for key, path in chat_raw(source).items()
    }


def chat_download_flags(wildcards):
    """The pinned dataset, revision, file and sha256 of one source, shell-quoted."""
    return settings_flags(getattr(SETTINGS.amberchat.data, wildcards.chat_source))


def chat_source_flags(wildcards, input):
    """--sharegpt FILE RECORD --wizardlm FILE RECORD."""
    return shlex.join(
        part
        for source in CHAT_SOURCES
        for part in (f"--{source}", input[source], input[f"{source}_record"])
    )

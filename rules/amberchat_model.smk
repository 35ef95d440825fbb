# AmberChat: Amber (LLM360/Amber at a pinned revision, or the embedded tiny one) finetuned on the
# conversations of rules/amberchat_data.smk with FastChat's recipe, then evaluated.
from amber_repro.models.tiny_amber import MODEL_SIZES as TINY_MODEL_SIZES

if config["amberchat"]["amber"]["source"] == "hub":

    rule download_amber:
        output:
            directory(CHAT_AMBER_DIR),
        log:
            "results/logs/download_amber.log",
        # On the submit host; the data split and training read the folder offline.
        localrule: is_local("download_amber")
        conda:
            "../envs/train.yaml"
        params:
            name=config["amberchat"]["amber"]["name"],
            revision=config["amberchat"]["amber"]["revision"],
        shell:
            "python -m amber_repro download-model --name {params.name:q} "
            "--revision {params.revision:q} --out-dir {output} > {log} 2>&1"

else:

    rule build_tiny_amber:
        # A tiny LLaMA with a SentencePiece tokenizer trained (LLaMA's settings) on the raw
        # conversations, not on the split ones: the split counts this tokenizer's tokens.
        input:
            texts=[chat_raw(source)[source] for source in CHAT_SOURCES],
            code=stage_code("chat-base"),
        output:
            directory(CHAT_AMBER_DIR),
        log:
            "results/logs/build_tiny_amber.log",
        conda:
            "../envs/train.yaml"
        params:
            flags=stage_flags(
                "amberchat.amber.tokenizer",
                ("base_model.tiny", list(TINY_MODEL_SIZES)),
            ),
        shell:
            "python -m amber_repro chat-base --texts {input.texts} --out-dir {output} "
            "{params.flags} > {log} 2>&1"


rule amberchat:
    input:
        data=f"{CHAT_DATA_DIR}/conversations-train.parquet",
        model=CHAT_AMBER_DIR,
        code=stage_code("chat-sft"),
        image=image_input(),
    output:
        directory(CHAT_MODEL),
    log:
        "results/logs/amberchat.log",
    benchmark:
        "results/benchmarks/amberchat.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("amberchat")
    threads: job_threads("amberchat")
    resources:
        **job_resources("amberchat"),
    params:
        launcher=launcher("amberchat"),
        state_dir=f"{CHAT_STATE_DIR}/chat-sft",
        flags=stage_flags(
            "amberchat.train",
            ("amberchat.amber.tokenizer", ["legacy"]),
            "reproducibility",
        ),
    shell:
        "{params.launcher} -m amber_repro chat-sft --data {input.data} --model {input.model} "
        "--out-dir {output} --state-dir {params.state_dir} {params.flags} > {log} 2>&1"


if config["amberchat"]["eval"]["harness_tasks"]:

    rule prepare_amberchat_eval_datasets:
        input:
            code=stage_code("eval-datasets"),
        output:
            f"{CHAT_DIR}/eval_datasets.json",
        log:
            "results/logs/prepare_amberchat_eval_datasets.log",
        # On the submit host: each harness task's dataset into the shared cache (eval.smk's way).
        localrule: is_local("prepare_amberchat_eval_datasets")
        conda:
            "../envs/train.yaml"
        params:
            tasks=amberchat_task_flags(),
            cache=config["eval"]["datasets_cache"],
        shell:
            "HF_DATASETS_CACHE={params.cache:q} python -m amber_repro eval-datasets "
            "{params.tasks} --out {output} > {log} 2>&1"


rule amberchat_eval:
    input:
        unpack(amberchat_eval_inputs),
    output:
        CHAT_EVAL,
    log:
        "results/logs/amberchat_eval.log",
    benchmark:
        "results/benchmarks/amberchat_eval.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("amberchat_eval")
    threads: job_threads("amberchat_eval")
    resources:
        **job_resources("amberchat_eval"),
    params:
        tasks=amberchat_task_flags(),
        flags=stage_flags(
            (
                "amberchat.eval",
                ["batch_size", "bootstrap_iters", "limit", "precision"],
            ),
            "amberchat.eval.generations",
            ("amberchat.train", ["model_max_length"]),
            ("amberchat.amber.tokenizer", ["legacy"]),
            "reproducibility",
        ),
        cache=config["eval"]["datasets_cache"],
    shell:
        # Offline: the datasets were cached on the submit host, the models are local folders.
        "HF_DATASETS_CACHE={params.cache:q} HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "
        "TRANSFORMERS_OFFLINE=1 python -m amber_repro chat-eval --model=amber={input.amber} "
        "--model=amberchat={input.amberchat} --conversations {input.conversations} "
        "{params.tasks} {params.flags} --out {output} > {log} 2>&1"

# AmberChat data: ShareGPT + WizardLM evol-instruct (or their synthetic stand-in) -> the mix,
# shuffled from a seed and cut by FastChat's split_long_conversation rule (docs/amberchat.md).

if config["amberchat"]["data"]["source"] == "hub":

    rule download_chat_data:
        output:
            data=f"{CHAT_RAW_DIR}/{{chat_source}}.json",
            record=f"{CHAT_RAW_DIR}/{{chat_source}}.source.json",
        log:
            "results/logs/download_chat_data_{chat_source}.log",
        wildcard_constraints:
            chat_source="|".join(CHAT_SOURCES),
        # Runs on the submit host: compute nodes often have no internet. The file is checked
        # against amberchat.data.<source>.sha256 when that is set; HF_TOKEN is never written.
        localrule: is_local("download_chat_data")
        conda:
            "../envs/data.yaml"
        params:
            flags=chat_download_flags,
        shell:
            "python -m amber_repro chat-download {params.flags} --out {output.data} "
            "--record {output.record} > {log} 2>&1"

else:

    rule synthesize_chat_data:
        input:
            code=stage_code("chat-synthesize"),
        output:
            **chat_raw_files(),
        log:
            "results/logs/synthesize_chat_data.log",
        conda:
            "../envs/data.yaml"
        params:
            flags=stage_flags("amberchat.data.synthetic"),
            out_dir=folder_of("sharegpt"),
        shell:
            "python -m amber_repro chat-synthesize {params.flags} --out-dir {params.out_dir} "
            "> {log} 2>&1"


rule chat_data:
    # The split counts tokens of Amber's tokenizer, so it reads the Amber folder.
    input:
        **chat_raw_files(),
        tokenizer=CHAT_AMBER_DIR,
        code=stage_code("chat-data"),
    output:
        train=f"{CHAT_DATA_DIR}/conversations-train.parquet",
        test=f"{CHAT_DATA_DIR}/conversations-test.parquet",
        manifest=f"{CHAT_DATA_DIR}/manifest.json",
    log:
        "results/logs/chat_data.log",
    conda:
        "../envs/data.yaml"
    threads: job_threads("chat_data")
    resources:
        **job_resources("chat_data"),
    params:
        sources=chat_source_flags,
        flags=stage_flags(("amberchat.data", ["seed", "max_length", "held_out"])),
        out_dir=folder_of("manifest"),
    shell:
        "python -m amber_repro chat-data {params.sources} --tokenizer {input.tokenizer} "
        "--out-dir {params.out_dir} {params.flags} > {log} 2>&1"

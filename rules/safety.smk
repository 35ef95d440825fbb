# Generation-based safety: each evaluated model answers harmful prompts greedily, a judge calls each
# answer safe or unsafe, and harmless_rate (with its Wilson interval) goes into eval.json.

if config["eval"]["safety"]["prompts"]["source"] == "hub":

    rule download_safety_prompts:
        output:
            prompts=f"{SAFETY_PROMPTS_DIR}/prompts.parquet",
            source=f"{SAFETY_PROMPTS_DIR}/source.json",
        log:
            "results/logs/download_safety_prompts.log",
        # On the submit host: the prompts dataset at its pinned revision.
        localrule: is_local("download_safety_prompts")
        conda:
            "../envs/data.yaml"
        params:
            flags=stage_flags(("eval.safety.prompts", ["dataset", "revision", "split"])),
            out_dir=folder_of("source"),
        shell:
            "python -m amber_repro download-safety-prompts {params.flags} "
            "--out-dir {params.out_dir} > {log} 2>&1"


if config["eval"]["safety"]["judge"]["kind"] == "beaver-dam":

    rule download_judge_model:
        output:
            directory(JUDGE_MODEL),
        log:
            "results/logs/download_judge_model.log",
        # On the submit host: the judge at its pinned revision, weights converted to safetensors.
        localrule: is_local("download_judge_model")
        conda:
            "../envs/train.yaml"
        params:
            flags=stage_flags(("eval.safety.judge", ["name", "revision"])),
        shell:
            "python -m amber_repro download-judge {params.flags} --out-dir {output} > {log} 2>&1"


rule safety_answers:
    input:
        unpack(safety_answer_inputs),
    output:
        answers=SAFETY_ANSWERS,
        record=f"{SAFETY_ANSWERS}.record.json",
    log:
        "results/logs/safety_answers.log",
    benchmark:
        "results/benchmarks/safety_answers.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("safety_answers")
    threads: job_threads("safety_answers")
    resources:
        **job_resources("safety_answers"),
    params:
        models=model_flags(config["eval"]["models"]),
        flags=stage_flags(
            ("eval.safety.prompts", ["count"]),
            ("eval.safety", ["max_new_tokens"]),
            "reproducibility",
        ),
    shell:
        "HF_HUB_OFFLINE=1 python -m amber_repro safety-answers {params.models} "
        "--prompts {input.prompts} {params.flags} --out {output.answers} "
        "--record {output.record} > {log} 2>&1"


rule safety_judge:
    input:
        unpack(safety_judge_inputs),
    output:
        SAFETY_VERDICTS,
    log:
        "results/logs/safety_judge.log",
    benchmark:
        "results/benchmarks/safety_judge.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("safety_judge")
    threads: job_threads("safety_judge")
    resources:
        **job_resources("safety_judge"),
    params:
        data=safety_judge_flags(),
        flags=stage_flags(
            ("eval.safety.judge", ["kind", "threshold", "batch_size"]),
            ("eval.safety", ["confidence"]),
        ),
    shell:
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m amber_repro safety-judge "
        "--answers {input.answers} {params.data} {params.flags} --out {output} > {log} 2>&1"

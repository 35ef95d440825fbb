# Evaluation: eval.json, greedy generations, and the report's figures.

if config["eval"]["harness_tasks"]:

    rule prepare_eval_datasets:
        output:
            f"{EVAL_DIR}/eval_datasets.json",
        log:
            "results/logs/prepare_eval_datasets.log",
        # On the submit host: downloads each harness task's dataset into the shared cache.
        localrule: is_local("prepare_eval_datasets")
        conda:
            "../envs/train.yaml"
        params:
            tasks=task_flags(),
            cache=config["eval"]["datasets_cache"],
        shell:
            "HF_DATASETS_CACHE={params.cache:q} python -m amber_repro eval-datasets "
            "{params.tasks} --out {output} > {log} 2>&1"


rule evaluate:
    # One model: the harness tasks in eval.precision, the safety preference task, and for the DPO
    # model its implicit rewards. Offline: the datasets were cached on the submit host.
    input:
        unpack(eval_inputs),
    output:
        eval_part("{model}"),
    log:
        "results/logs/evaluate/{model}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}.tsv"
    wildcard_constraints:
        model="base|sft|dpo",
    conda:
        "../envs/train.yaml"
    container:
        job_container("evaluate")
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    params:
        model=eval_model_flag,
        tasks=task_flags(),
        flags=eval_flags,
        cache=config["eval"]["datasets_cache"],
        work_dir=f"{EVAL_DIR}/.eval_work/{{model}}",
    shell:
        "HF_DATASETS_CACHE={params.cache:q} HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "
        "TRANSFORMERS_OFFLINE=1 python -m amber_repro eval {params.model} --pairs {input.pairs} "
        "{params.tasks} {params.flags} --work-dir {params.work_dir} --out {output} > {log} 2>&1"


rule eval_summary:
    input:
        parts=eval_parts(),
        safety=SAFETY_VERDICTS,
        code=stage_code("eval-summary"),
    output:
        f"{EVAL_DIR}/eval.json",
    log:
        "results/logs/eval_summary.log",
    # The models' evaluations and the safety verdicts in one eval.json (cheap: the submit host).
    localrule: is_local("eval_summary")
    conda:
        "../envs/data.yaml"
    params:
        parts=part_flags,
        safety=shlex.join(["--safety", SAFETY_VERDICTS]),
    shell:
        "python -m amber_repro eval-summary {params.parts} {params.safety} --out {output} "
        "> {log} 2>&1"


rule generate:
    input:
        sft=SFT_MODEL,
        dpo=DPO_MODEL,
        pairs=f"{DATA_DIR}/pairs-test.parquet",
        code=stage_code("generate"),
        image=image_input(),
    output:
        markdown=f"{EVAL_DIR}/generations.md",
        record=f"{EVAL_DIR}/generations.md.record.json",
    log:
        "results/logs/generate.log",
    benchmark:
        "results/benchmarks/generate.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("generate")
    threads: job_threads("generate")
    resources:
        **job_resources("generate"),
    params:
        models=model_flags(["sft", "dpo"]),
        flags=stage_flags("eval.generations", "reproducibility"),
    shell:
        "HF_HUB_OFFLINE=1 python -m amber_repro generate {params.models} --pairs {input.pairs} "
        "{params.flags} --out {output.markdown} --record {output.record} > {log} 2>&1"


rule report_figures:
    input:
        sft=SFT_MODEL,
        dpo=DPO_MODEL,
        eval_json=f"{EVAL_DIR}/eval.json",
        code=stage_code("plots"),
    output:
        sft=report(
            f"{EVAL_DIR}/report/sft_curves.png",
            caption="captions/sft_curves.rst",
            category="Training curves",
        ),
        dpo=report(
            f"{EVAL_DIR}/report/dpo_curves.png",
            caption="captions/dpo_curves.rst",
            category="Training curves",
        ),
        table=report(
            f"{EVAL_DIR}/report/eval_table.html",
            caption="captions/eval_table.rst",
            category="Evaluation",
        ),
        record=f"{EVAL_DIR}/report/figures.record.json",
    log:
        "results/logs/report_figures.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python -m amber_repro plots --sft-metrics {input.sft}/metrics.jsonl "
        "--dpo-metrics {input.dpo}/metrics.jsonl --eval-json {input.eval_json} "
        "--sft-plot {output.sft} --dpo-plot {output.dpo} --eval-table {output.table} "
        "--record {output.record} > {log} 2>&1"

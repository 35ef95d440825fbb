# Named experiments (config `experiments`): each is the dpo, evaluate and generate rules again, with
# the experiment's settings and outputs under results/ambersafe/experiments/{experiment}/. The data,
# the SFT checkpoint and the reference log-probs are shared; the sweep compares every experiment.


wildcard_constraints:
    experiment=experiment_name_pattern(),


use rule dpo as dpo_experiment with:
    output:
        directory(f"{EXPERIMENTS_DIR}/{{experiment}}/dpo"),
    log:
        "results/logs/experiments/{experiment}/dpo.log",
    benchmark:
        "results/benchmarks/experiments/{experiment}/dpo.tsv"
    params:
        launcher=launcher("dpo"),
        state_dir=f"{STATE_DIR}/experiments/{{experiment}}/dpo",
        flags=experiment_dpo_flags,


use rule evaluate as evaluate_experiment with:
    input:
        unpack(experiment_eval_inputs),
    output:
        eval_part("{model}", f"{EXPERIMENTS_DIR}/{{experiment}}"),
    log:
        "results/logs/experiments/{experiment}/evaluate/{model}.log",
    benchmark:
        "results/benchmarks/experiments/{experiment}/evaluate/{model}.tsv"
    wildcard_constraints:
        model="dpo",
    params:
        model=eval_model_flag,
        tasks=task_flags(),
        flags=experiment_eval_flags,
        cache=config["eval"]["datasets_cache"],
        work_dir=f"{EXPERIMENTS_DIR}/{{experiment}}/.eval_work/{{model}}",


use rule eval_summary as eval_summary_experiment with:
    input:
        parts=[eval_part("dpo", f"{EXPERIMENTS_DIR}/{{experiment}}")],
        code=stage_code("eval-summary"),
    output:
        f"{EXPERIMENTS_DIR}/{{experiment}}/eval.json",
    log:
        "results/logs/experiments/{experiment}/eval_summary.log",
    # harmless_rate is measured for the default models only.
    localrule: is_local("eval_summary_experiment")
    params:
        parts=part_flags,
        safety="",


use rule generate as generate_experiment with:
    input:
        sft=SFT_MODEL,
        dpo=experiment_dpo_model,
        pairs=f"{DATA_DIR}/pairs-test.parquet",
        code=stage_code("generate"),
        image=image_input(),
    output:
        markdown=f"{EXPERIMENTS_DIR}/{{experiment}}/generations.md",
        record=f"{EXPERIMENTS_DIR}/{{experiment}}/generations.md.record.json",
    log:
        "results/logs/experiments/{experiment}/generate.log",
    benchmark:
        "results/benchmarks/experiments/{experiment}/generate.tsv"
    params:
        models=experiment_generation_models,
        flags=experiment_generation_flags,


if config["experiments"]:

    rule sweep:
        # One table (and plot) of every experiment: what it changed, held-out results, time.
        input:
            unpack(sweep_inputs),
        output:
            table=SWEEP,
            plot=report(
                f"{EVAL_DIR}/report/sweep.png",
                caption="captions/sweep.rst",
                category="Experiments",
            ),
        log:
            "results/logs/sweep.log",
        conda:
            "../envs/train.yaml"
        params:
            experiments=sweep_flags(),
        shell:
            "python -m amber_repro sweep {params.experiments} --out {output.table} "
            "--plot {output.plot} > {log} 2>&1"

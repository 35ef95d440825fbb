"""Estimates of the jobs that only run models forward: the evaluation (lm-eval, our preference
task, the DPO rewards), the greedy generations and the safety answers and judge."""

from __future__ import annotations

from amber_repro.config.experiments import experiment_settings
from amber_repro.planning import costs
from amber_repro.planning.context import STARTUP_SECONDS, Context, Row
from amber_repro.planning.workloads import HarnessWork, harness_work, preference_task_work

# The beaver-dam judge reads the prompt and the answer (assumed prompt length).
SAFETY_PROMPT_TOKENS = 40
BEAVERTAILS_PROMPTS = 700  # BeaverTails-Evaluation at its pinned commit


def harness_row(context, name, rule, models, tasks, evaluation, resources, extra) -> Row:
    """lm-eval on each of `models` checkpoints in one job, in evaluation.precision; `extra`: the
    job's other forward work in float32 (tokens), e.g. the DPO rewards."""
    shape = context.shape
    work: HarnessWork = harness_work(tasks, evaluation.limit)
    if rule in ("evaluate", "evaluate_experiment"):
        work += preference_task_work(
            context.pairs, context.settings.tokenization.max_length, evaluation.limit
        )
    if work.unknown:
        context.notes.append(f"{name}: no estimate for lm-eval task(s) {', '.join(work.unknown)}")
    precision = context.precision(evaluation.precision)
    length = work.forward_tokens / max(work.requests, 1)
    flops = models * work.forward_tokens * costs.forward_flops_per_token(shape, length)
    float32 = context.precision("float32")
    extra_flops = extra * costs.forward_flops_per_token(shape, 512)
    weights = costs.BYTES[precision] * shape.params
    decode = costs.decode_seconds(
        models * work.generated_tokens / evaluation.batch_size, weights, context.gpu
    )
    seconds = (
        context.seconds(flops, 1, precision, "harness")
        + costs.compute_seconds(
            extra_flops, 1, context.gpu, float32, context.utilisation("dpo", float32)
        )
        + decode
    )
    batch_tokens = evaluation.batch_size * 2048
    memory = costs.inference_memory_gb(shape, costs.BYTES[precision], batch_tokens)
    if extra:
        memory = max(memory, costs.inference_memory_gb(shape, 4, 32 * 2 * 512))
    tokens = models * (work.forward_tokens + work.generated_tokens) + extra
    return Row(
        name,
        rule,
        resources.gpus,
        shape.params,
        tokens,
        flops + extra_flops,
        precision,
        memory,
        seconds,
        resources.runtime_min,
    )


def evaluate(context: Context) -> list[Row]:
    settings, rows = context.settings, []
    rewards = 2 * context.pairs.test_pairs * context.pairs.sequence(512)
    for model in settings.eval.models:
        extra = rewards if model == "dpo" else 0
        rows.append(
            harness_row(
                context,
                f"evaluate[{model}]",
                "evaluate",
                1,
                settings.eval.harness_tasks,
                settings.eval,
                settings.resources.evaluate,
                extra,
            )
        )
    for name in settings.experiments:
        _, evaluation = experiment_settings(settings, name)
        rows.append(
            harness_row(
                context,
                f"evaluate[{name}]",
                "evaluate_experiment",
                1,
                evaluation.harness_tasks,
                evaluation,
                settings.resources.evaluate,
                rewards,
            )
        )
    return rows


def generation_row(context, name, rule, new_tokens: float, resources, precision="fp32") -> Row:
    """Greedy decoding one prompt at a time: the weights' bytes per new token."""
    shape = context.shape
    weights = costs.BYTES[precision] * shape.params
    seconds = STARTUP_SECONDS + costs.decode_seconds(new_tokens, weights, context.gpu)
    flops = new_tokens * costs.forward_flops_per_token(shape, 256)
    memory = costs.inference_memory_gb(shape, costs.BYTES[precision], 2048)
    return Row(
        name,
        rule,
        resources.gpus,
        shape.params,
        new_tokens,
        flops,
        precision,
        memory,
        seconds,
        resources.runtime_min,
    )


def generations(context: Context) -> list[Row]:
    settings = context.settings
    per_model = settings.eval.generations.prompts * settings.eval.generations.max_new_tokens
    rows = [
        generation_row(context, "generate", "generate", 2 * per_model, settings.resources.generate)
    ]
    safety = settings.eval.safety
    prompts = safety.prompts.count or (
        BEAVERTAILS_PROMPTS if safety.prompts.source == "hub" else context.pairs.test_prompts
    )
    answers = len(settings.eval.models) * prompts
    rows.append(
        generation_row(
            context,
            "safety_answers",
            "safety_answers",
            answers * safety.max_new_tokens,
            settings.resources.safety_answers,
        )
    )
    if safety.judge.kind == "beaver-dam":
        tokens = answers * (SAFETY_PROMPT_TOKENS + safety.max_new_tokens)
        flops = tokens * costs.forward_flops_per_token(costs.LLAMA_7B, 300)
        resources = settings.resources.safety_judge
        seconds = context.seconds(flops, 1, "bf16", "forward")
        memory = costs.inference_memory_gb(costs.LLAMA_7B, 2, safety.judge.batch_size * 512)
        rows.append(
            Row(
                "safety_judge",
                "safety_judge",
                resources.gpus,
                costs.LLAMA_7B.params,
                tokens,
                flops,
                "bf16",
                memory,
                seconds,
                resources.runtime_min,
            )
        )
    return rows

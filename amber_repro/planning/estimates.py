"""One estimate per job the run submits: the work of each rule (workloads.py) turned into FLOPs,
memory and time (costs.py), with the job's resources from the config. The training jobs and the
CPU jobs are here; the forward-only jobs in inference.py."""

from __future__ import annotations

from collections.abc import Callable

from amber_repro.config.experiments import experiment_names, experiment_settings
from amber_repro.planning import costs
from amber_repro.planning.context import PAIR_PADDING, SFT_PADDING, Context, Row
from amber_repro.planning.inference import evaluate, generations, harness_row
from amber_repro.planning.workloads import eval_sample_size

# FastChat's split: WizardLM 143k + ShareGPT 90k conversations, at least one piece each (each
# piece counted at model_max_length: an upper bound).
AMBERCHAT_PIECES = 233_000


def evaluation_count(steps: int, eval_every: int, batch: int, first: bool) -> int:
    """Held-out evaluations of a run: the reference's cadence, and ours after the last step."""
    every = max(1, eval_every // batch)
    return int(first) + (steps - 1) // every + 1


def training_row(context: Context, name: str, rule: str, stage, examples: int, sequences: int):
    """SFT (one sequence an example) or DPO (two) on `examples`, with held-out evaluations."""
    resources = getattr(context.settings.resources, rule.removesuffix("_experiment"))
    ranks = resources.gpus * resources.nodes
    max_length = context.settings.tokenization.max_length
    padding = SFT_PADDING if sequences == 1 else PAIR_PADDING
    length = context.pairs.sequence(max_length) * padding
    steps = examples // stage.batch_size * stage.n_epochs
    tokens = steps * stage.batch_size * sequences * length
    held_out = context.pairs.test_prompts if sequences == 1 else context.pairs.test_pairs
    evals = evaluation_count(steps, stage.eval_every, stage.batch_size, stage.do_first_eval)
    eval_tokens = evals * eval_sample_size(held_out, stage.eval_examples, stage.eval_batch_size)
    eval_tokens *= sequences * length
    shape = context.shape
    recompute = stage.gradient_checkpointing
    flops = tokens * costs.training_flops_per_token(shape, length, recompute)
    flops += eval_tokens * costs.forward_flops_per_token(shape, length)
    micro = stage.batch_size // (stage.gradient_accumulation_steps * ranks)
    activation_bytes = 2 if stage.precision == "bf16" else 4
    memory = costs.training_memory_gb(
        shape, ranks, micro * sequences * max_length, 4, activation_bytes, recompute
    )
    precision = context.precision(stage.precision)
    seconds = context.seconds(flops, ranks, precision, "sft" if sequences == 1 else "dpo")
    return Row(
        name,
        rule,
        ranks,
        shape.params,
        tokens,
        flops,
        precision,
        memory,
        seconds,
        resources.runtime_min,
    )


def sft(context: Context) -> list[Row]:
    stage = context.settings.sft
    return [training_row(context, "sft", "sft", stage, context.pairs.train_prompts, 1)]


def dpo(context: Context) -> list[Row]:
    rows = []
    for name in experiment_names(context.settings):
        stage, _ = experiment_settings(context.settings, name)
        rule = "dpo" if name == "default" else "dpo_experiment"
        label = "dpo" if name == "default" else f"dpo[{name}]"
        rows.append(training_row(context, label, rule, stage, context.pairs.train_pairs, 2))
    return rows


def ref_logps(context: Context) -> list[Row]:
    settings = context.settings
    resources, shape = settings.resources.ref_logps, context.shape
    pairs = context.pairs.train_pairs + context.pairs.test_pairs
    length = context.pairs.sequence(settings.tokenization.max_length)
    tokens = 2 * pairs * length
    if settings.reference.share_prompt:
        tokens -= pairs * context.pairs.prompt_tokens  # the prompt once per pair
    flops = tokens * costs.forward_flops_per_token(shape, length)
    dtype = settings.reference.precision
    precision = context.precision(dtype)
    budget = settings.reference.max_tokens or 2 * settings.reference.batch_size * 512
    memory = costs.inference_memory_gb(shape, costs.BYTES[precision], budget)
    ranks = resources.gpus * resources.nodes
    seconds = context.seconds(flops, ranks, precision, "forward")
    return [
        Row(
            "ref_logps",
            "ref_logps",
            ranks,
            shape.params,
            tokens,
            flops,
            precision,
            memory,
            seconds,
            resources.runtime_min,
        )
    ]


def amberchat(context: Context) -> list[Row]:
    """Amber -> AmberChat, when AmberSafe starts from this run's AmberChat."""
    settings = context.settings
    if settings.base_model.source != "amberchat":
        return []
    train, resources, shape = settings.amberchat.train, settings.resources.amberchat, context.shape
    ranks = resources.gpus * resources.nodes
    length = train.model_max_length
    steps = AMBERCHAT_PIECES // train.batch_size * train.n_epochs
    tokens = steps * train.batch_size * length
    recompute = train.gradient_checkpointing
    flops = tokens * costs.training_flops_per_token(shape, length, recompute)
    micro = train.batch_size // (train.gradient_accumulation_steps * ranks)
    activation_bytes = 2 if train.precision == "bf16" else 4
    memory = costs.training_memory_gb(shape, ranks, micro * length, 8, activation_bytes, recompute)
    precision = context.precision(train.precision)
    seconds = context.seconds(flops, ranks, precision, "amberchat")
    rows = [
        Row(
            "amberchat",
            "amberchat",
            ranks,
            shape.params,
            tokens,
            flops,
            precision,
            memory,
            seconds,
            resources.runtime_min,
        )
    ]
    evaluation = settings.amberchat.eval
    rows.append(
        harness_row(
            context,
            "amberchat_eval",
            "amberchat_eval",
            2,
            evaluation.harness_tasks,
            evaluation,
            settings.resources.amberchat_eval,
            0,
        )
    )
    return rows


# The CPU jobs at full size, measured with bench/cpu_jobs.py on a 2-core x86-64 (AMD EPYC):
# (units of work, seconds, peak MB). filter_pairs: raw rows; chat_data: conversations (0.9 GB).
FILTER_MEASURED = (330_438, 4.1, 1721)
CHAT_DATA_MEASURED = (233_000, 439.3, 5638)
RAW_ROWS = 330_438  # PKU-SafeRLHF v0's two splits


def cpu_row(name: str, work: float, measured: tuple, resources) -> Row:
    """A CPU job scaled linearly from its measurement; its memory against `resources.mem_mb`."""
    units, seconds, peak_mb = measured
    share = work / units
    memory_gb, seconds = share * peak_mb / 1000, share * seconds
    return Row(
        name, name, 0, 0, 0, 0, "cpu", memory_gb, seconds, resources.runtime_min, resources.mem_mb
    )


def cpu_jobs(context: Context) -> list[Row]:
    settings = context.settings
    synthetic = settings.data.synthetic
    rows = RAW_ROWS if settings.data.source == "hub" else synthetic.train_rows + synthetic.test_rows
    found = [cpu_row("filter_pairs", rows, FILTER_MEASURED, settings.resources.filter_pairs)]
    if settings.base_model.source == "amberchat":
        data = settings.amberchat.data
        conversations = (
            CHAT_DATA_MEASURED[0] if data.source == "hub" else 2 * data.synthetic.conversations
        )
        found.append(
            cpu_row("chat_data", conversations, CHAT_DATA_MEASURED, settings.resources.chat_data)
        )
    return found


JOB_ESTIMATES: tuple[Callable[[Context], list[Row]], ...] = (
    cpu_jobs,
    amberchat,
    sft,
    ref_logps,
    dpo,
    evaluate,
    generations,
)

"""One estimate per job the run submits: the work of each rule (workloads.py) turned into FLOPs,
memory and time (costs.py), with the job's resources from the config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from amber_repro.infrastructure.experiments import experiment_names, experiment_settings
from amber_repro.planning import costs
from amber_repro.planning.workloads import (
    HarnessWork,
    PairData,
    eval_sample_size,
    harness_work,
    preference_task_work,
)

# Loading the weights and data, and the process group under torchrun: assumed, per job.
STARTUP_SECONDS = 600
# Padded tokens per real token: SFT micro-batches padded to their longest; a DPO pair's chosen
# and rejected padded to the longer of the two (assumed). The reference pass batches by length.
SFT_PADDING, PAIR_PADDING = 1.3, 1.15
# The beaver-dam judge reads the prompt and the answer (assumed prompt length).
SAFETY_PROMPT_TOKENS = 40
# FastChat's split: WizardLM 143k + ShareGPT 90k conversations, at least one piece each (each
# piece counted at model_max_length: an upper bound).
AMBERCHAT_PIECES = 233_000
BEAVERTAILS_PROMPTS = 700  # BeaverTails-Evaluation at its pinned commit


# Model FLOPs utilisation (achieved FLOP/s over the GPU's dense peak for the compute precision),
# measured on one H200 with bench/gpu_scale.py (docs/measurements.md, "At 1B parameters on one
# GPU"): training steps at four of LLaMA-7B's own layers under FSDP, at the recipe's per-GPU
# micro-batches; fp32 at a 1B shape; the reference pass at the 7B layers; lm-eval at 1B. Applied
# to the other GPU types' peaks as they are: an assumption.
UTILISATION = {
    ("sft", "tf32"): 0.32,
    ("dpo", "tf32"): 0.24,
    ("sft", "bf16"): 0.18,
    ("dpo", "bf16"): 0.14,
    ("sft", "fp32"): 0.62,
    ("dpo", "fp32"): 0.56,
    ("amberchat", "bf16"): 0.32,
    ("forward", "fp16"): 0.46,
    ("forward", "bf16"): 0.46,
    ("harness", "fp16"): 0.17,
    ("harness", "bf16"): 0.17,
}
UNMEASURED = 0.20  # any other (kind, precision): an assumption, named in the plan's notes
UTILISATION_SOURCE = (
    "measured on one NVIDIA H200 (bench/gpu_scale.py): SFT 32% / DPO 24% in TF32, AmberChat 32% "
    "in bf16, the reference pass 46% and lm-eval 17% in float16; applied to the chosen GPU's peaks"
)


@dataclass
class Row:
    """One job's estimate."""

    job: str
    rule: str
    gpus: int
    params: float
    tokens: float
    flops: float
    precision: str
    memory_gb: float
    seconds: float
    limit_min: int
    node_memory_mb: int = 0  # a CPU job's memory request (resources.<rule>.mem_mb)

    @property
    def gpu_hours(self) -> float:
        return self.seconds * self.gpus / 3600


@dataclass
class Context:
    settings: object  # the resolved Config
    pairs: PairData
    gpu: costs.GPU
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> costs.Shape:
        """The model every AmberSafe stage trains and evaluates."""
        source = self.settings.base_model.source
        if source == "tiny" or (
            source == "amberchat" and self.settings.amberchat.amber.source == "tiny"
        ):
            tiny = self.settings.base_model.tiny
            return costs.Shape(
                tiny.num_layers,
                tiny.hidden_size,
                tiny.intermediate_size,
                tiny.num_heads,
                tiny.num_heads,
                tiny.vocab_size,
            )
        return costs.LLAMA_7B

    def precision(self, dtype: str) -> str:
        reproducibility = self.settings.reproducibility
        return costs.compute_precision(dtype, reproducibility.tf32, reproducibility.deterministic)

    def utilisation(self, kind: str, precision: str) -> float:
        share = UTILISATION.get((kind, precision))
        if share is None:
            note = f"utilisation of {kind} in {precision}: not measured, {UNMEASURED:.0%} assumed"
            if note not in self.notes:
                self.notes.append(note)
            return UNMEASURED
        return share

    def seconds(self, flops: float, gpus: int, precision: str, kind: str) -> float:
        share = self.utilisation(kind, precision)
        return STARTUP_SECONDS + costs.compute_seconds(flops, gpus, self.gpu, precision, share)

    def assumptions(self, retries: int) -> list[str]:
        return [
            f"GPU: {self.gpu.name}, dense peak TFLOP/s {self.gpu.peak_tflops}, "
            f"{self.gpu.bandwidth_gbs} GB/s",
            f"utilisation: {UTILISATION_SOURCE}",
            f"data: {self.pairs.source}",
            f"each job: {STARTUP_SECONDS} s to start; padding: SFT x{SFT_PADDING}, DPO pairs "
            f"x{PAIR_PADDING}; lm-eval task sizes: amber_repro/planning/workloads.py",
            f"resumable jobs get SIGTERM before their limit and {retries} retries (the slurm "
            "profile); memory: per GPU, or a CPU job's own (against resources.<rule>.mem_mb)",
            "CPU jobs: scaled from bench/cpu_jobs.py on a 2-core x86-64 (AMD EPYC)",
            *self.notes,
        ]


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

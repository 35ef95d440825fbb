"""Settings that must agree with each other, checked together before any job starts:
each problem is (key, its value, a message naming the values)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import (
    ValidationError,
)

from amber_repro.config.eval_sections import EvalSettings
from amber_repro.config.experiments import DEFAULT, EVAL_KEYS, experiment_settings
from amber_repro.config.jobs import MULTI_NODE
from amber_repro.config.resource_sections import JobResources, Resources
from amber_repro.config.sections import DPOSettings, TinyModel, Tokenization, Training
from amber_repro.config.types import merge, unknown_key

if TYPE_CHECKING:  # Config runs these checks when it validates: schema.py imports this module
    from amber_repro.config.schema import Config

CONFLICT = "settings_conflict"  # the error type; its message already names the key's value


TRAINING_JOBS = ("sft", "dpo")  # their batch_size is GLOBAL: split over micro-steps and processes


def processes_per_node(job: JobResources) -> int:
    """One process per GPU; a CPU-only job (0 GPUs) runs one process."""
    return max(1, job.gpus)


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def conflicts(config: Config) -> list[tuple[tuple[str, ...], object, str]]:
    """(key, its value, message) for every pair of settings that cannot work together."""
    from amber_repro.config.checks import experiment_conflicts

    return [
        *_tokenization_conflicts(config.tokenization),
        *_tiny_model_conflicts(config.base_model.tiny),
        *_batch_conflicts(config),
        *batch_conflicts(
            ("amberchat", "train"), config.amberchat.train, "amberchat", config.resources.amberchat
        ),
        *_resource_conflicts(config.resources),
        *experiment_conflicts(config),
    ]


def _tokenization_conflicts(tokens: Tokenization) -> list:
    """Keep-start truncation cuts responses to max_length - max_prompt_length: it must be > 0."""
    if tokens.max_prompt_length < tokens.max_length:
        return []
    message = (
        f"tokenization.max_prompt_length: {tokens.max_prompt_length} is not below "
        f"tokenization.max_length {tokens.max_length} (a truncated prompt must leave room for "
        "the response)"
    )
    return [(("tokenization", "max_prompt_length"), tokens.max_prompt_length, message)]


def _tiny_model_conflicts(tiny: TinyModel) -> list:
    """LlamaConfig splits hidden_size evenly over the heads, and rotary position embeddings need
    an even head size. The tiny Amber (amberchat.amber.source: tiny) has the same sizes."""
    hidden, heads = tiny.hidden_size, tiny.num_heads
    named = f"base_model.tiny.hidden_size: {hidden}"
    if hidden % heads:
        message = (
            f"{named} is not divisible by base_model.tiny.num_heads {heads} (each attention head "
            "takes an equal share of the hidden size)"
        )
    elif hidden // heads % 2:
        message = (
            f"{named} / base_model.tiny.num_heads {heads} is {hidden // heads} dimensions per "
            "head, an odd number (rotary position embeddings need an even head size)"
        )
    else:
        return []
    return [(("base_model", "tiny", "hidden_size"), hidden, message)]


def _batch_conflicts(config: Config) -> list:
    """Each process runs equal micro-batches: batch = micro x accumulation x processes
    (training.micro_batch_size, the GLOBAL convention)."""
    return [
        problem
        for name in TRAINING_JOBS
        for problem in batch_conflicts(
            (name,), getattr(config, name), name, getattr(config.resources, name)
        )
    ]


def batch_conflicts(where: tuple[str, ...], stage: Training, job_name: str, job) -> list:
    """The batch check of one training stage's settings; `where` is their key ("dpo",)."""
    processes = processes_per_node(job) * job.nodes
    key, problems = ".".join(where), []
    if stage.batch_size % (stage.gradient_accumulation_steps * processes):
        message = (
            f"{key}.batch_size: {stage.batch_size} is not divisible by "
            f"{key}.gradient_accumulation_steps {stage.gradient_accumulation_steps} x "
            f"{_count(processes, 'process', 'processes')} "
            f"(resources.{job_name}: {_count(job.gpus, 'GPU')} x {_count(job.nodes, 'node')})"
        )
        problems.append(((*where, "batch_size"), stage.batch_size, message))
    if getattr(stage, "eval_every", stage.batch_size) < stage.batch_size:
        message = (
            f"{key}.eval_every: {stage.eval_every} training examples is below {key}.batch_size "
            f"{stage.batch_size}: evaluations come between optimizer steps"
        )
        problems.append(((*where, "eval_every"), stage.eval_every, message))
    return problems


def _resource_conflicts(resources: Resources) -> list:
    """Only the torchrun rules span nodes, and each of their processes needs a core."""
    problems = []
    for name in Resources.model_fields:
        job: JobResources = getattr(resources, name)
        if job.nodes > 1 and name not in MULTI_NODE:
            message = (
                f"resources.{name}.nodes: {job.nodes}, but only "
                f"{', '.join(sorted(MULTI_NODE))} run on several nodes"
            )
            problems.append((("resources", name, "nodes"), job.nodes, message))
        if name in MULTI_NODE and job.cpus < processes_per_node(job):
            message = (
                f"resources.{name}.cpus: {job.cpus} is fewer than the "
                f"{processes_per_node(job)} processes per node (resources.{name}.gpus "
                f"{job.gpus}): each process needs a core"
            )
            problems.append((("resources", name, "cpus"), job.cpus, message))
    return problems


def experiment_conflicts(config: Config) -> list[tuple[tuple[str, ...], object, str]]:
    """(key, value, message) for each change an experiment cannot make, named by experiment and
    key: experiments.<name>.dpo.<key>."""
    return [
        problem
        for name in config.experiments
        for problem in _one_experiment(config, name, ("experiments", name))
    ]


def _one_experiment(config: Config, name: str, where: tuple[str, ...]) -> list:
    if name == DEFAULT:
        return [(where, name, f"experiments.{name}: reserved for the config's own dpo settings")]
    changes = config.experiments[name]
    problems = [
        (
            (*where, "eval", key),
            value,
            f"experiments.{name}.eval.{key}: not a setting an experiment can change "
            f"(it can change: {', '.join(EVAL_KEYS)})",
        )
        for key, value in changes.eval.items()
        if key not in EVAL_KEYS
    ]
    if problems:
        return problems
    for section, model, base in (
        ("dpo", DPOSettings, config.dpo),
        ("eval", EvalSettings, config.eval),
    ):
        try:
            model.model_validate(merge(base.model_dump(), getattr(changes, section)))
        except ValidationError as error:
            problems += _named(error, (*where, section), model)
    if problems:
        return problems
    dpo, _ = experiment_settings(config, name)
    return batch_conflicts((*where, "dpo"), dpo, "dpo", config.resources.dpo)


def _named(error: ValidationError, where: tuple[str, ...], model) -> list:
    """A settings class's errors, each as one line naming the experiment's key."""
    problems = []
    for problem in error.errors():
        loc = (*where, *map(str, problem["loc"]))
        key = ".".join(loc)
        if problem["type"] == "extra_forbidden":
            message = unknown_key(key, model.model_fields)
        else:
            message = f"{key}: {problem['msg']} (got {problem['input']!r})"
        problems.append((loc, problem["input"], message))
    return problems

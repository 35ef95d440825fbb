"""What kind of job each rule of the workflow is, written once.

Everything else derives from this table: which rules run on the submit host (`localrule`), which run
in the GPU image, the config's `resources` section and its recipe defaults, which rules may span
nodes, the SLURM warning signal of the resumable ones, the provenance crate's list of jobs and the
replay's choice between rerunning a job and restoring its bundled outputs.
`tests/test_jobs.py` lists every rule Snakemake knows and fails on one missing here, or described
differently by the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# SLURM sends SIGTERM this long before a resumable job's time limit: the loop saves a checkpoint
# at the next optimizer step and exits 143, and the retry resumes (sbatch --signal=TERM@600).
SIGTERM_WARNING_SECONDS = 600

Part = Literal["ambersafe", "amberchat", "experiments", "workflow"]


@dataclass(frozen=True)
class Size:
    """A job's request on the scheduler (the recipe's default of `resources.<rule>`)."""

    gpus: int
    cpus: int
    mem_mb: int
    runtime_min: int


@dataclass(frozen=True)
class Job:
    """One rule. `size` gives it its own `resources.<rule>` entry; `sized_like` shares another's."""

    rule: str
    label: str  # what it makes, in words (the replay's messages)
    stage: str | None  # the `python -m amber_repro <stage>` it runs; None: no stage
    gpu: bool = False  # runs in the GPU image, one process per GPU
    local: bool = False  # on the submit host: downloads and cheap bookkeeping
    multi_node: bool = False  # torchrun on every node of its allocation
    resumable: bool = False  # checkpoints on SIGTERM and resumes when rerun
    fetches: bool = False  # reads the network (Hugging Face hub, image registries)
    restored: bool = False  # a replay restores its bundled outputs instead of rerunning it
    size: Size | None = None
    sized_like: str | None = None
    part: Part = "ambersafe"  # "workflow": a target or bookkeeping, not a job of the crate

    def __post_init__(self):
        if self.fetches and self.part != "workflow" and not self.restored:
            raise ValueError(f"{self.rule} fetches from the network: a replay must restore it")
        if self.fetches and not self.local:
            raise ValueError(f"{self.rule} fetches from the network: compute nodes may have none")
        if self.size and self.sized_like:
            raise ValueError(f"{self.rule}: its own size or another's, not both")

    @property
    def resources(self) -> str | None:
        """The key of its `resources` entry; None: the profile's default resources."""
        return self.rule if self.size else self.sized_like

    @property
    def restored_as(self) -> str:
        """What the bundle holds for a restored job."""
        return f"{self.label} ({'hub snapshot' if self.fetches else 'generated files'})"


# The 7B recipe's sizes on 8 x 80 GB GPU nodes (docs/cluster.md has the arithmetic; `python -m
# amber_repro plan` checks them).
NODE_OF_8 = Size(gpus=8, cpus=64, mem_mb=480_000, runtime_min=2880)
ONE_GPU = Size(gpus=1, cpus=8, mem_mb=64_000, runtime_min=720)

JOBS: tuple[Job, ...] = (
    # --- AmberSafe: data, training, evaluation
    Job("download_data", "raw data", "download-data", local=True, fetches=True, restored=True),
    # Restored, not regenerated: the bundle holds the synthetic files as used.
    Job("synthesize_data", "raw data", "synthesize", restored=True),
    # 330k raw rows: at most 1.7 GB and 4 s measured (bench/cpu_jobs.py, docs/measurements.md).
    Job("filter_pairs", "data", "filter", size=Size(0, 2, 4_000, 15)),
    Job(
        "download_base_model",
        "base model",
        "download-model",
        local=True,
        fetches=True,
        restored=True,
    ),
    Job("build_tiny_model", "base model", "base-model"),
    Job("sft", "SFT", "sft", gpu=True, multi_node=True, resumable=True, size=NODE_OF_8),
    Job(
        "ref_logps",
        "reference log-probs",
        "ref-logps",
        gpu=True,
        multi_node=True,
        size=Size(1, 8, 64_000, 720),
    ),
    Job("dpo", "DPO", "dpo", gpu=True, multi_node=True, resumable=True, size=NODE_OF_8),
    Job(
        "download_safety_prompts",
        "safety prompts",
        "download-safety-prompts",
        local=True,
        fetches=True,
        restored=True,
    ),
    Job(
        "download_judge_model",
        "safety judge",
        "download-judge",
        local=True,
        fetches=True,
        restored=True,
    ),
    Job(
        "safety_answers",
        "safety answers",
        "safety-answers",
        gpu=True,
        size=Size(1, 8, 64_000, 240),
    ),
    Job("safety_judge", "safety verdicts", "safety-judge", gpu=True, size=Size(1, 8, 64_000, 120)),
    Job(
        "prepare_eval_datasets",
        "lm-eval datasets",
        "eval-datasets",
        local=True,
        fetches=True,
        restored=True,
    ),
    Job("evaluate", "eval of one model", "eval", gpu=True, size=ONE_GPU),
    Job("eval_summary", "eval", "eval-summary", local=True),
    Job("generate", "generations", "generate", gpu=True, size=Size(1, 8, 64_000, 120)),
    Job("report_figures", "report", "plots"),
    # --- named experiments: DPO variants sharing data, SFT and reference log-probs
    Job(
        "dpo_experiment",
        "DPO",
        "dpo",
        gpu=True,
        multi_node=True,
        resumable=True,
        sized_like="dpo",
        part="experiments",
    ),
    Job(
        "evaluate_experiment",
        "eval of one model",
        "eval",
        gpu=True,
        sized_like="evaluate",
        part="experiments",
    ),
    Job("eval_summary_experiment", "eval", "eval-summary", local=True, part="experiments"),
    Job(
        "generate_experiment",
        "generations",
        "generate",
        gpu=True,
        sized_like="generate",
        part="experiments",
    ),
    Job("sweep", "sweep", "sweep", part="experiments"),
    # --- AmberChat: Amber -> AmberChat
    Job("synthesize_chat_data", "conversations", "chat-synthesize", part="amberchat"),
    Job(
        "download_chat_data",
        "conversations",
        "chat-download",
        local=True,
        fetches=True,
        restored=True,
        part="amberchat",
    ),
    Job(
        "download_amber",
        "Amber",
        "download-model",
        local=True,
        fetches=True,
        restored=True,
        part="amberchat",
    ),
    Job("build_tiny_amber", "Amber", "chat-base", part="amberchat"),
    # 233k conversations (0.9 GB) tokenized and split: 5.6 GB and 7.3 minutes measured
    # (bench/cpu_jobs.py, docs/measurements.md).
    Job(
        "chat_data",
        "conversations split",
        "chat-data",
        size=Size(0, 2, 12_000, 60),
        part="amberchat",
    ),
    Job(
        "amberchat",
        "AmberChat",
        "chat-sft",
        gpu=True,
        multi_node=True,
        resumable=True,
        size=Size(8, 64, 480_000, 4320),
        part="amberchat",
    ),
    Job(
        "prepare_amberchat_eval_datasets",
        "lm-eval datasets",
        "eval-datasets",
        local=True,
        fetches=True,
        restored=True,
        part="amberchat",
    ),
    Job("amberchat_eval", "AmberChat eval", "chat-eval", gpu=True, size=ONE_GPU, part="amberchat"),
    # --- the workflow's own targets and bookkeeping (not jobs of the crate)
    Job("build_container", "image", None, local=True, fetches=True, part="workflow"),
    Job("provenance", "provenance crate", "crate", local=True, part="workflow"),
    Job("all", "everything", None, local=True, part="workflow"),
)

BY_RULE: dict[str, Job] = {job.rule: job for job in JOBS}
# Rules with their own `resources` entry (the settings' Resources section), in table order.
SIZED: dict[str, Size] = {job.rule: job.size for job in JOBS if job.size}
MULTI_NODE: tuple[str, ...] = tuple(sorted(job.rule for job in JOBS if job.multi_node and job.size))


def job(rule: str) -> Job:
    """The registry's entry of a rule; a rule missing here is a bug of the workflow."""
    try:
        return BY_RULE[rule]
    except KeyError:
        raise KeyError(f"rule {rule} is not in amber_repro/config/jobs.py") from None


def rules(**wanted) -> set[str]:
    """The rules whose fields have these values, e.g. rules(gpu=True)."""
    return {j.rule for j in JOBS if all(getattr(j, k) == v for k, v in wanted.items())}

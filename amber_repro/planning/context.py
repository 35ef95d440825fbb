"""What every estimate shares: the row it makes, the config and data it reads, the GPU and the
measured utilisation it assumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from amber_repro.planning import costs
from amber_repro.planning.workloads import PairData

# Loading the weights and data, and the process group under torchrun: assumed, per job.
STARTUP_SECONDS = 600
# Padded tokens per real token: SFT micro-batches padded to their longest; a DPO pair's chosen
# and rejected padded to the longer of the two (assumed). The reference pass batches by length.
SFT_PADDING, PAIR_PADDING = 1.3, 1.15


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

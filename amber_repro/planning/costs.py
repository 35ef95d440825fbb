"""What a job costs on a GPU: FLOPs, memory per GPU and time, as pure arithmetic.

Conventions (the ones MFU figures are usually quoted in):
- FLOPs per token of a forward pass: 2 x the matmul parameters (every linear layer, the output head
  included; not the embedding lookup) + 4 x layers x hidden x the sequence length (QK^T and AV);
  a training step is 3 forward passes' worth, one more with activation recomputation (PaLM,
  appendix B; nanoGPT's estimate_mfu).
- Peaks are dense (no sparsity) and per GPU, from NVIDIA's datasheets for the SXM parts.
- Greedy generation, one sequence at a time, reads every weight once per new token: its time is the
  weights' bytes over the memory bandwidth, whatever the FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    """A LLaMA-architecture decoder (LlamaConfig's names)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def layer_matmul_params(self) -> int:
        kv = self.hidden * self.kv_heads // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv  # q, o; k, v
        return attention + 3 * self.hidden * self.intermediate  # gate, up, down

    @property
    def matmul_params(self) -> int:
        """The parameters that multiply activations: the decoder layers and the output head."""
        return self.layers * self.layer_matmul_params + self.vocab * self.hidden

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        embedding = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.matmul_params + embedding + norms


# LLM360/Amber, AmberChat and AmberSafe (each config.json on the hub), and LLaMA-7B-based judges.
LLAMA_7B = Shape(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32000)


def forward_flops_per_token(shape: Shape, sequence: float) -> float:
    return 2 * shape.matmul_params + 4 * shape.layers * shape.hidden * sequence


def training_flops_per_token(shape: Shape, sequence: float, recompute: bool = False) -> float:
    """Forward, backward (2 forwards' worth) and, with gradient checkpointing, one more forward."""
    return (4 if recompute else 3) * forward_flops_per_token(shape, sequence)


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    bandwidth_gbs: float  # HBM, GB/s
    peak_tflops: dict[str, float]  # dense, by compute precision: fp32, tf32, bf16, fp16


GPUS = {
    "a100-80gb": GPU(
        "NVIDIA A100 80GB SXM",
        80,
        2039,
        {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    ),
    "h100-80gb": GPU(
        "NVIDIA H100 80GB SXM",
        80,
        3350,
        {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    ),
}

BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}


def compute_precision(dtype: str, tf32: bool, deterministic: bool) -> str:
    """What the tensor cores run: float32 weights multiply in TF32 when it is on."""
    if dtype in ("bf16", "float16", "fp16"):
        return "fp16" if dtype in ("float16", "fp16") else "bf16"
    return "tf32" if tf32 and not deterministic else "fp32"


def compute_seconds(flops: float, gpus: int, gpu: GPU, precision: str, utilisation: float) -> float:
    return flops / (gpus * gpu.peak_tflops[precision] * 1e12 * utilisation)


def decode_seconds(new_tokens: float, weight_bytes: float, gpu: GPU) -> float:
    """Greedy decoding one sequence at a time: each new token reads all weights once."""
    return new_tokens * weight_bytes / (gpu.bandwidth_gbs * GB)


def training_memory_gb(
    shape: Shape,
    ranks: int,
    micro_tokens: float,
    optimizer_bytes: int,
    activation_bytes: int,
    recompute: bool,
) -> float:
    """Peak memory of one rank under FSDP full sharding (per LlamaDecoderLayer, then the root):
    - sharded float32 weights, gradients and optimizer state (RMSprop 4 B/param, AdamW 8),
    - the gathered units: two decoder layers (this and the prefetched one) and the root's
      embeddings and head, in float32,
    - activations: about 34 x hidden bytes per token per layer in 16-bit (Korthikanti et al. 2022,
      without the attention matrix that SDPA never stores), twice that in float32; with
      recomputation only each layer's input is kept, plus one layer's full activations,
    - logits and their float32 log-softmax and gradient: 3 x 4 B x vocab per token.
    """
    state = (4 + 4 + optimizer_bytes) * shape.params / ranks
    gathered = 4 * (2 * shape.layer_matmul_params + 2 * shape.vocab * shape.hidden)
    per_layer = 34 * shape.hidden * activation_bytes / 2 * micro_tokens
    if recompute:
        activations = shape.layers * shape.hidden * activation_bytes * micro_tokens + per_layer
    else:
        activations = shape.layers * per_layer
    logits = 3 * 4 * shape.vocab * micro_tokens
    return (state + gathered + activations + logits) / GB


def inference_memory_gb(shape: Shape, dtype_bytes: int, batch_tokens: float) -> float:
    """Weights on one GPU, one layer's activations and the batch's float32 logits."""
    weights = dtype_bytes * shape.params
    activations = 34 * shape.hidden * dtype_bytes / 2 * batch_tokens
    logits = 2 * 4 * shape.vocab * batch_tokens
    return (weights + activations + logits) / GB

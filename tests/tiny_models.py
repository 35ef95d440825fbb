"""A small randomly initialised LLaMA for the log-prob and loss tests (one size everywhere)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
}


def tiny_llama(vocab_size: int, **sizes) -> LlamaForCausalLM:
    """Seed 0, in eval mode; `sizes` override SIZES."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **{**SIZES, **sizes})).eval()

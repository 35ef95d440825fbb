"""The embedded default's base model: a tiny LlamaForCausalLM and a tokenizer trained on the data.

Stands in for LLM360/AmberChat on laptops and CI: same architecture family (LLaMA, RMSNorm, no BOS
in training), built from a LlamaConfig with a fixed seed, with a byte-level BPE tokenizer trained by
the `tokenizers` library on the training texts, saved with save_pretrained like a hub checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.sections import TinyModel
from amber_repro.models.export import model_card, write_model_dir
from amber_repro.provenance.hashing import sha256_file

SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
}


def training_texts(pairs: Path, sft: Path) -> list[str]:
    frame = pl.read_parquet(pairs)
    texts = (
        frame["prompt"].unique(maintain_order=True).to_list()
        + frame["chosen"].to_list()
        + frame["rejected"].to_list()
    )
    return texts + pl.read_parquet(sft)["response"].to_list()


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (any Unicode text round-trips), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )


def build_model(tokenizer, tiny: TinyModel):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(tiny.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs", type=Path, required=True, help="pairs-train.parquet (tokenizer training text)"
    )
    parser.add_argument(
        "--sft", type=Path, required=True, help="sft-train.parquet (tokenizer training text)"
    )
    parser.add_argument("--out-dir", type=Path, required=True)
    add_settings_arguments(parser, TinyModel)


def main(args: argparse.Namespace, tiny: TinyModel) -> None:
    tokenizer = train_tokenizer(training_texts(args.pairs, args.sft), tiny.vocab_size)
    model = build_model(tokenizer, tiny)
    n_params = sum(p.numel() for p in model.parameters())
    settings = tiny.model_dump()
    card = model_card(
        "amber-repro tiny base model",
        f"A randomly initialised LlamaForCausalLM ({n_params:,} parameters) standing in for "
        "LLM360/AmberChat in the embedded default, with a byte-level BPE tokenizer trained on the "
        "training split.",
        base_model="none (built from a LlamaConfig)",
        data={"pairs": args.pairs, "sft": args.sft},
        settings=settings,
        results={"parameters": n_params, "vocabulary": len(tokenizer)},
    )
    record = {
        "stage": "base-model",
        "settings": settings,
        "inputs": {str(p): sha256_file(p) for p in (args.pairs, args.sft)},
    }
    write_model_dir(model, tokenizer, args.out_dir, card, record)
    print(
        f"built a {n_params:,}-parameter LlamaForCausalLM with a {len(tokenizer)}-token tokenizer "
        f"in {args.out_dir}"
    )

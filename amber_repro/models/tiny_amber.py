"""Amber's kind of tokenizer, and the embedded stand-in for Amber built with one.

FastChat's loss mask (chat_template.preprocess) computes turn offsets that only hold for a LLaMA
SentencePiece tokenizer, so the embedded default cannot use the byte-level BPE tokenizer of
tiny_llama.py: here a small SentencePiece BPE model is trained with the settings of LLaMA's own
tokenizer.model (its trainer_spec and normalizer_spec) and saved as a Hugging Face LLaMA tokenizer
folder (tokenizer.model, tokenizer.json, tokenizer_config.json), the layout of LLM360/Amber's.

`legacy` matters: with it, text right after a special token ("</s>USER") gets SentencePiece's
dummy-prefix space; without it, not. FastChat corrects its offsets for the non-legacy case.
transformers 5 does not write `legacy` when it saves a tokenizer (it reloads as false), so every
folder written here records it explicitly (load_tokenizer).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from amber_repro.config.chat_sections import ChatTokenizer
from amber_repro.config.cli import add_settings_arguments, run_settings
from amber_repro.config.sections import TinyModel
from amber_repro.errors import AmberError

# LLaMA's tokenizer.model, as its ModelProto prints (trainer_spec, normalizer_spec): BPE with byte
# fallback, digits split, whitespace kept as is (identity normalization, no whitespace cleanup).
# Dropped: its corpus, vocab_size (ours is configured), num_threads (one thread: the same model
# on every machine) and input_sentence_size (ours is small enough to use every line).
LLAMA_TRAINER_SPEC = {
    "model_type": "bpe",
    "character_coverage": 0.99995,
    "seed_sentencepiece_size": 1000000,
    "shrinking_factor": 0.75,
    "num_sub_iterations": 2,
    "max_sentence_length": 4192,
    "max_sentencepiece_length": 16,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "treat_whitespace_as_suffix": False,
    "split_digits": True,
    "allow_whitespace_only_pieces": True,
    "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True,
    "use_all_vocab": False,
    "byte_fallback": True,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "unk_piece": "<unk>",
    "bos_piece": "<s>",
    "eos_piece": "</s>",
    "normalization_rule_name": "identity",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
}
# What transformers 4.3x's LlamaTokenizer assumed when a folder did not say (FastChat ran on it).
DEFAULT_LEGACY = True
SENTENCEPIECE_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"
# Special tokens as LLaMA's folder has them, and FastChat's choice of pad token: unk.
SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<unk>",
}


def _lines(texts: Iterable[str]) -> Iterator[str]:
    """One training sentence per non-empty line, as SentencePiece reads a text file."""
    for text in texts:
        yield from (line for line in text.splitlines() if line.strip())


def train_sentencepiece_model(texts: Iterable[str], vocab_size: int) -> bytes:
    """A serialized SentencePiece model trained on `texts` with LLaMA's settings."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts),
            model_writer=model,
            vocab_size=vocab_size,
            num_threads=1,
            minloglevel=2,
            **LLAMA_TRAINER_SPEC,
        )
    except RuntimeError as error:
        # e.g. "Vocabulary size is too high": the text has fewer distinct pieces than asked for.
        raise AmberError(
            f"training a {vocab_size}-piece SentencePiece model: {error} "
            "(amberchat.amber.tokenizer.vocab_size sets the size)"
        ) from error
    return model.getvalue()


def load_tokenizer(path: Path, legacy: bool | None = None, model_max_length: int | None = None):
    """A LLaMA tokenizer folder loaded as FastChat's train.py loads it (pad token = unk), with its
    `legacy` mode: `legacy`, else the folder's, else DEFAULT_LEGACY. The mode is pinned into the
    tokenizer so that save_pretrained writes it."""
    from transformers import AutoTokenizer

    config_file = Path(path) / CONFIG_FILE
    if legacy is None and config_file.is_file():
        legacy = json.loads(config_file.read_text(encoding="utf-8")).get("legacy")
    legacy = DEFAULT_LEGACY if legacy is None else legacy
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    tokenizer = AutoTokenizer.from_pretrained(path, legacy=legacy, local_files_only=True, **extra)
    if getattr(tokenizer, "legacy", None) is not legacy:
        raise AmberError(
            f"{path}: {type(tokenizer).__name__} is not a LLaMA SentencePiece tokenizer with a "
            "legacy mode; FastChat's loss mask assumes one"
        )
    if tokenizer.pad_token != tokenizer.unk_token:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.init_kwargs["legacy"] = legacy
    return tokenizer


def train_llama_sentencepiece(
    texts: Iterable[str],
    out_dir: Path,
    vocab_size: int,
    legacy: bool = DEFAULT_LEGACY,
    model_max_length: int = 2048,
) -> Path:
    """Train a SentencePiece model on `texts` and write it to `out_dir` as a LLaMA tokenizer folder
    that AutoTokenizer loads (bos <s>, eos </s>, unk <unk>, pad = unk). Deterministic: every line
    is used, on one thread, so the same texts give the same model (SentencePiece has no seed to
    set)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SENTENCEPIECE_FILE).write_bytes(train_sentencepiece_model(texts, vocab_size))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": legacy,
        "model_max_length": model_max_length,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS,
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # Saving what transformers loaded adds tokenizer.json, so later loads need no conversion.
    load_tokenizer(out_dir).save_pretrained(out_dir)
    return out_dir


# --- the chat-base stage: the embedded "Amber" ----------------------------------------------------

MODEL_SIZES = ("hidden_size", "intermediate_size", "num_layers", "num_heads")
MODEL_SIZES += ("max_position_embeddings", "seed")
# The settings main receives, in this order.
SECTIONS = (ChatTokenizer, (TinyModel, MODEL_SIZES))


def template_texts() -> list[str]:
    """The vicuna_v1.1 template's own words. Amber's tokenizer learnt English from its pretraining
    corpus; the tiny one learns the template's words from these lines, the rest from the data."""
    from amber_repro.data.chat_template import ROLES, SYSTEM_MESSAGE

    return [SYSTEM_MESSAGE, *(f"{role}: " for role in ROLES.values())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--texts",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="raw conversation JSON files (either source schema): the tokenizer's training text",
    )
    parser.add_argument("--out-dir", type=Path, required=True)
    add_settings_arguments(parser, *SECTIONS)


def main(args: argparse.Namespace, chat_tokenizer: ChatTokenizer, tiny: TinyModel) -> None:
    import tempfile
    from itertools import chain

    from amber_repro.data.chat_sources import raw_texts
    from amber_repro.models.export import model_card, write_model_dir
    from amber_repro.models.tiny_llama import build_model
    from amber_repro.provenance.hashing import sha256_file

    legacy = DEFAULT_LEGACY if chat_tokenizer.legacy is None else chat_tokenizer.legacy
    sections = (chat_tokenizer, tiny)
    settings = run_settings(args, SECTIONS, sections, {"texts", "out_dir", "stage"})
    settings["legacy"] = legacy
    with tempfile.TemporaryDirectory() as tmp:
        texts = chain(template_texts(), raw_texts(args.texts))
        folder = train_llama_sentencepiece(texts, Path(tmp), chat_tokenizer.vocab_size, legacy)
        tokenizer = load_tokenizer(folder)
        model = build_model(tokenizer, tiny)
        n_params = sum(p.numel() for p in model.parameters())
        card = model_card(
            "amber-repro tiny Amber",
            f"A randomly initialised LlamaForCausalLM ({n_params:,} parameters) standing in for "
            "LLM360/Amber in the embedded default, with a SentencePiece BPE tokenizer trained "
            "with LLaMA's settings on the raw conversations.",
            base_model="none (built from a LlamaConfig)",
            data={"texts": [str(p) for p in args.texts]},
            settings=settings,
            results={"parameters": n_params, "vocabulary": len(tokenizer)},
        )
        record = {
            "stage": "chat-base",
            "settings": settings,
            "inputs": {str(p): sha256_file(p) for p in args.texts},
        }
        model_file = {SENTENCEPIECE_FILE: folder / SENTENCEPIECE_FILE}
        write_model_dir(model, tokenizer, args.out_dir, card, record, model_file)
    print(
        f"built a {n_params:,}-parameter LlamaForCausalLM with a {len(tokenizer)}-piece "
        f"SentencePiece tokenizer (legacy={legacy}) in {args.out_dir}"
    )

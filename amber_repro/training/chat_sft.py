"""Instruction finetuning, Amber -> AmberChat, as FastChat's train.py runs it through the Hugging
Face Trainer (v0.2.33, late 2023).

Read top to bottom: render and mask every conversation as FastChat's `preprocess` does
(chat_template.py), load (and shard, under torchrun) the model, build the Trainer's AdamW and cosine
schedule, restore a checkpoint if this same run was interrupted, then the loop shared with SFT
(loop.py) with the Trainer's loss, and a final save_pretrained folder with a model card.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.chat_sections import ChatTokenizer, ChatTrainSettings
from amber_repro.config.cli import add_training_arguments, run_settings
from amber_repro.config.sections import Reproducibility
from amber_repro.data.chat_template import preprocess
from amber_repro.data.tokenization import IGNORE_INDEX
from amber_repro.errors import DataError
from amber_repro.models.export import model_card
from amber_repro.models.tiny_amber import load_tokenizer
from amber_repro.provenance.hashing import sha256_file
from amber_repro.training import loop
from amber_repro.training.logprobs import sequence_logps
from amber_repro.training.schedule import total_steps

TEMPLATE = "vicuna_v1.1"  # FastChat's get_conversation_template("vicuna") at v0.2.33


# The settings main receives, in this order. The tokenizer's legacy mode moves FastChat's turn
# offsets: the same one in every stage.
SECTIONS = (ChatTrainSettings, (ChatTokenizer, ("legacy",)), Reproducibility)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="conversations-train.parquet (id, source, turns)"
    )
    add_training_arguments(parser, *SECTIONS)


def read_conversations(path: Path) -> list[list[dict]]:
    """The `turns` of every row: lists of {"role": "human"|"gpt", "text": ...}."""
    frame = pl.read_parquet(path)
    if "turns" not in frame.columns:
        raise DataError(f"{path}: no `turns` column (columns: {', '.join(frame.columns)})")
    return frame["turns"].to_list()


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """A malformed conversation (chat_template's ValueError: a role out of turn) as a DataError
    that names the file it is in."""
    try:
        yield
    except DataError:
        raise
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None


def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The Trainer's loss of one micro-batch: the causal LM's mean negative log-likelihood over its
    trained (assistant) tokens. A micro-batch with none (every example masked out by FastChat's
    mismatch rule) adds 0 rather than the Trainer's NaN."""
    trained = (labels[:, 1:] != IGNORE_INDEX).sum()
    return -sequence_logps(logits, labels).sum() / trained.clamp(min=1)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """The Trainer's TrainingArguments.get_warmup_steps for a ratio: ceil(ratio x total)."""
    return math.ceil(total_steps * warmup_ratio)


def build_optimizer(model: torch.nn.Module, train: ChatTrainSettings) -> torch.optim.Optimizer:
    """FastChat's `optim="adamw_torch"`: torch's AdamW. The Trainer puts biases and norms in a
    group without weight decay; with the recipe's weight decay 0 both groups are the same, so with
    another value the decay applies to those as well (said in docs/amberchat.md)."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=train.lr,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_epsilon,
        weight_decay=train.weight_decay,
    )


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    """lr_scheduler_type "cosine": linear warmup from 0, then a half cosine to 0 at total_steps
    (transformers' own function, as the Trainer calls it)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(
        optimizer, warmup_steps(total_steps, warmup_ratio), total_steps
    )


def main(
    args: argparse.Namespace,
    train: ChatTrainSettings,
    chat_tokenizer: ChatTokenizer,
    repro: Reproducibility,
) -> None:
    procs = loop.prepare(train, repro)
    tokenizer = load_tokenizer(args.model, chat_tokenizer.legacy, train.model_max_length)
    with naming(args.data):
        chat = preprocess(read_conversations(args.data), tokenizer, train.model_max_length)
    examples = [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(chat.input_ids, chat.labels, strict=True)
    ]
    total = total_steps(len(examples), train.batch_size, train.n_epochs, args.max_steps)

    def optimizer_and_schedule(model):
        optimizer = build_optimizer(model, train)
        return optimizer, build_scheduler(optimizer, total, train.warmup_ratio)

    settings = run_settings(args, SECTIONS, (train, chat_tokenizer, repro))
    paths, inputs = (args.model, args.state_dir), [args.model, args.data]
    run = loop.start_run("chat-sft", train, settings, paths, inputs, procs, optimizer_and_schedule)
    step = loop.supervised_step(
        run.model, examples, tokenizer.pad_token_id, token_mean_loss, train, procs.device
    )
    done = loop.train(run, train, len(examples), step, args.max_steps)
    results = {
        "optimizer steps": done.steps,
        "warmup steps": warmup_steps(total, train.warmup_ratio),
        "final loss": loop.last_loss(run.metrics.path),
        "processes": procs.world_size,
        "train tokens/s": done.tokens / max(done.seconds, 1e-9),
    }
    describe = functools.partial(describe_model, args, settings, results, chat.mismatched)
    loop.finish(run, tokenizer, args.out_dir, args.state_dir, describe)
    if procs.is_main:
        print(
            f"chat-sft: {done.steps} optimizer steps in {done.seconds:.1f} s on "
            f"{procs.world_size} process(es), {len(chat.mismatched)} of {len(examples)} "
            f"conversations masked out by the mismatch rule; saved {args.out_dir}"
        )


def describe_model(args, settings: dict, results: dict, mismatched: list[int]) -> tuple[str, dict]:
    """The AmberChat folder's model card and record (the tokenizer pads with unk, as trained)."""
    source = loop.source_of(args.model)
    data_sha256 = sha256_file(args.data)
    conversations = {
        "conversations": pl.read_parquet(args.data, columns=["id"]).height,
        "masked out by the mismatch rule": len(mismatched),
    }
    card = model_card(
        "AmberChat (amber-repro)",
        f"Instruction finetuning of {source} on multi-turn conversations in FastChat's "
        f"{TEMPLATE} template; only assistant turns (and their </s>) are trained, as in FastChat's "
        "train.py. Prompt it the same way: `python -m amber_repro chat-eval` shows how.",
        base_model=source,
        data={"conversations": args.data, "sha256": data_sha256, "template": TEMPLATE},
        settings=settings,
        results={**results, **conversations},
    )
    record = {
        "stage": "chat-sft",
        "template": TEMPLATE,
        "settings": settings,
        "base_model": source,
        "inputs": {str(args.data): data_sha256},
        "results": results,
        "conversations": conversations,
        # Indices into the training parquet, so each can be looked at.
        "mismatched": mismatched,
    }
    return card, record

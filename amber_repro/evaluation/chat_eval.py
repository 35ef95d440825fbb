"""AmberChat's evaluation: lm-eval on Amber and AmberChat (LLM360's reported tasks and shots), the
assistant-token loss of held-out conversations, and greedy answers in the trained template.

eval.json (schema_version 1):
  models.<name>.path / .weights_sha256           which checkpoint was evaluated
  models.<name>.tasks.<task>.<metric>            lm-eval, as in the AmberSafe eval.json
  models.<name>.heldout.{loss, perplexity, tokens, conversations, mismatched}
                                                 mean NLL per trained (assistant) token
  generations.{template, max_new_tokens, items[{id, prompt, reference, answers.<name>}]}
  versions, config, run, inputs, timing, command
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.chat_sections import (
    ChatEvalSettings,
    ChatGenerations,
    ChatTokenizer,
    ChatTrainSettings,
)
from amber_repro.config.cli import add_settings_arguments, run_settings
from amber_repro.config.sections import Reproducibility
from amber_repro.data.chat_template import generation_prompt, preprocess, render_prompt
from amber_repro.data.tokenization import IGNORE_INDEX, collate
from amber_repro.evaluation.eval_stage import HARNESS_KEYS, harness_results, parse_task
from amber_repro.models.tiny_amber import load_tokenizer
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.run_context import (
    command_line,
    kernel_settings,
    run_context,
    software_versions,
)
from amber_repro.storage import write_json
from amber_repro.training.chat_sft import TEMPLATE, naming, read_conversations
from amber_repro.training.logprobs import sequence_logps
from amber_repro.training.runtime import load_model, processes, set_kernels


@torch.no_grad()
def heldout_loss(model, tokenizer, conversations, model_max_length, batch_size, device) -> dict:
    """Mean negative log-likelihood per trained token over every held-out conversation, masked as
    in training (FastChat's preprocess: assistant answers and their </s> only)."""
    chat = preprocess(conversations, tokenizer, model_max_length)
    examples = [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(chat.input_ids, chat.labels, strict=True)
    ]
    nll, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll -= float(sequence_logps(logits, batch["labels"]).sum())
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    loss = nll / tokens if tokens else None
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss is not None else None,
        "tokens": tokens,
        "conversations": len(examples),
        "mismatched": len(chat.mismatched),
    }


@torch.no_grad()
def answers(model, tokenizer, prompts: list[str], max_new_tokens: int, device) -> list[str]:
    """Greedy answers to prompts rendered in the training template (BOS added, as in training)."""
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt).input_ids], device=device)
        generated = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs.append(
            tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()
        )
    return outputs


def generation_items(frame: pl.DataFrame, count: int) -> list[dict]:
    """The first `count` held-out conversations: the prompt for their last human turn, and the
    reference answer when the conversation has one."""
    items = []
    for row in frame.head(count).iter_rows(named=True):
        turns = row["turns"]
        reference = turns[-1]["text"] if turns and turns[-1]["role"] == "gpt" else None
        items.append(
            {
                "id": row["id"],
                "prompt": generation_prompt(turns),
                "reference": reference,
                "answers": {},
            }
        )
    return items


def evaluate_model(name: str, path: Path, frame, items, tasks, sections) -> dict:
    """One model: harness tasks, held-out loss, and its answers (added to `items`); `sections`
    are main's."""
    harness, generations, train, chat_tokenizer, _ = sections
    device = processes().device
    entry: dict = {
        "path": str(path),
        "weights_sha256": {p.name: sha256_file(p) for p in sorted(path.glob("*.safetensors"))},
    }
    if tasks:
        entry["tasks"], entry["task_versions"] = harness_results(path, tasks, harness)
    tokenizer = load_tokenizer(path, chat_tokenizer.legacy, train.model_max_length)
    model = load_model(path, torch.float32, device).eval()
    if frame.height:
        conversations = frame["turns"].to_list()
        entry["heldout"] = heldout_loss(
            model, tokenizer, conversations, train.model_max_length, harness.batch_size, device
        )
    prompts = [i["prompt"] for i in items]
    texts = answers(model, tokenizer, prompts, generations.max_new_tokens, device)
    for item, text in zip(items, texts, strict=True):
        item["answers"][name] = text
    return entry


def preprocess_check(conversations) -> None:
    for turns in conversations:
        render_prompt(turns)


# The settings main receives, in this order.
SECTIONS = (
    (ChatEvalSettings, HARNESS_KEYS),
    ChatGenerations,
    (ChatTrainSettings, ("model_max_length",)),
    (ChatTokenizer, ("legacy",)),
    Reproducibility,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a save_pretrained folder (repeatable), e.g. amberchat=results/amberchat/model",
    )
    parser.add_argument(
        "--conversations", type=Path, required=True, help="conversations-test.parquet (held out)"
    )
    parser.add_argument(
        "--task", action="append", default=[], metavar="NAME[:SHOTS]", help="an lm-eval task"
    )
    add_settings_arguments(parser, *SECTIONS)
    parser.add_argument("--out", type=Path, required=True, help="eval.json")


def main(
    args: argparse.Namespace,
    harness: ChatEvalSettings,
    generations: ChatGenerations,
    train: ChatTrainSettings,
    chat_tokenizer: ChatTokenizer,
    repro: Reproducibility,
) -> None:
    sections = (harness, generations, train, chat_tokenizer, repro)
    set_kernels(repro.deterministic, repro.tf32)
    started = time.perf_counter()
    models = {name: Path(path) for name, path in (m.split("=", 1) for m in args.model)}
    frame = pl.read_parquet(args.conversations)
    with naming(args.conversations):
        # Every conversation is rendered before any model loads: a bad one stops the stage here.
        preprocess_check(read_conversations(args.conversations))
        items = generation_items(frame, generations.prompts)
    tasks = [parse_task(task) for task in args.task]
    report: dict = {"schema_version": 1, "models": {}}
    seconds = {}
    for name, path in models.items():
        began = time.perf_counter()
        report["models"][name] = evaluate_model(name, path, frame, items, tasks, sections)
        seconds[name] = round(time.perf_counter() - began, 3)
        heldout = report["models"][name].get("heldout") or {}
        print(f"{name}: held-out assistant-token loss {heldout.get('loss')}")
    report["generations"] = {
        "template": TEMPLATE,
        "max_new_tokens": generations.max_new_tokens,
        "items": items,
    }
    software = software_versions()
    report["kernels"] = kernel_settings()
    report["versions"] = {"lm_eval": software.get("lm_eval"), "software": software}
    report["config"] = run_settings(args, SECTIONS, sections, {"out", "stage"})
    report["run"] = run_context()
    report["inputs"] = {str(args.conversations): sha256_file(args.conversations)}
    report["timing"] = {
        "seconds_per_model": seconds,
        "total_seconds": round(time.perf_counter() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["command"] = command_line()
    write_json(args.out, report)
    print(f"wrote {args.out}")

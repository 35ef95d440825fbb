"""A deterministic stand-in for the AmberChat sources, for laptops and CI (the embedded default).

Writes `wizardlm.json` (WizardLM evol-instruct V2 schema: `idx`, `conversations`) and
`sharegpt.json` (ShareGPT V3 schema: `id`, `conversations`), each with a source record. Most
conversations are valid, single- or multi-turn; some are long enough for the embedded max_length to
split them, one in a few has a first answer too long for any piece; and a few are invalid the ways
the real data is, so each of FastChat's drop rules has something to drop: a dangling last question,
an answer first, a "system" or "bing" role, a conversation of one message, an empty one.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

from amber_repro.config.chat_sections import ChatSyntheticData
from amber_repro.config.cli import add_settings_arguments
from amber_repro.data.chat_sources import ID_KEYS, SOURCE_SCHEMAS
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import write_json

SUBJECTS = [
    "bake sourdough bread",
    "write a Python function that reverses a list",
    "plan a three-day trip to Lisbon",
    "explain photosynthesis to a child",
    "train for a first marathon",
    "sort a list of numbers in SQL",
    "write a polite email declining a meeting",
    "learn the basics of the guitar",
    "save money on groceries",
    "keep tomato plants healthy",
    "prepare for a job interview",
    "summarise the causes of the French Revolution",
    "set up a Git repository",
    "care for a new puppy",
    "explain compound interest",
    "write a haiku about autumn rain",
]
QUESTIONS = [
    "How do I {s}?",
    "Can you help me {s}?",
    "What is the best way to {s}? Please be specific.",
    "I want to {s}. Where should I start?",
    "¿Puedes ayudarme? I need to {s}.",
]
FOLLOW_UPS = [
    "Can you give me more detail on the second point?",
    "What are common mistakes to avoid?",
    "How long does that usually take?",
    "Could you make it shorter?",
    "Thanks! Anything else I should know?",
]
STEPS = [
    "Start with a clear goal and write it down.",
    "Gather what you need before you begin.",
    "Work in small steps and check the result of each one.",
    "Ask for feedback early, when changes are still cheap.",
    "Keep notes so that you can repeat what worked.",
    "Take breaks: a rested mind spots problems faster.",
    "Compare your result with a trusted example.",
    "Practise a little every day rather than a lot once a week.",
]


def _answer(rng: random.Random, subject: str, sentences: int) -> str:
    body = " ".join(rng.choice(STEPS) for _ in range(sentences))
    return f"Here is how to {subject}. {body}"


def _valid(rng: random.Random, pairs: int, sentences: tuple[int, int]) -> list[dict]:
    subject = rng.choice(SUBJECTS)
    messages = []
    for turn in range(pairs):
        question = rng.choice(QUESTIONS).format(s=subject) if turn == 0 else rng.choice(FOLLOW_UPS)
        messages.append({"from": "human", "value": question})
        messages.append({"from": "gpt", "value": _answer(rng, subject, rng.randint(*sentences))})
    return messages


def _conversation(rng: random.Random, kind: str) -> list[dict]:
    """Messages of one conversation of the given kind (see KINDS)."""
    if kind == "single":
        return _valid(rng, 1, (1, 3))
    if kind == "multi":
        return _valid(rng, rng.randint(2, 3), (1, 3))
    if kind == "long":  # several pieces at the embedded max_length
        return _valid(rng, rng.randint(5, 8), (6, 10))
    if kind == "huge_first":  # a first answer over any embedded max_length: an empty first piece
        return _valid(rng, 1, (40, 40)) + _valid(rng, 2, (1, 2))
    messages = _valid(rng, rng.randint(1, 3), (1, 3))
    if kind == "dangling":
        return [*messages, {"from": "human", "value": rng.choice(FOLLOW_UPS)}]
    if kind == "gpt_first":
        return [*messages[1:], {"from": "human", "value": rng.choice(FOLLOW_UPS)}]
    if kind == "system_first":
        return [{"from": "system", "value": "You are a helpful assistant."}, *messages[:-1]]
    if kind == "bad_role":  # a role ShareGPT has: only the piece that holds it is dropped
        messages[-1]["from"] = "bing"
        return messages
    if kind == "one_message":
        return messages[:1]
    return []  # "empty"


# kind -> weight; the valid kinds dominate, as in the real data.
KINDS = {
    "single": 30,
    "multi": 30,
    "long": 12,
    "huge_first": 3,
    "dangling": 6,
    "gpt_first": 4,
    "system_first": 3,
    "bad_role": 6,
    "one_message": 3,
    "empty": 3,
}


def _identifier(rng: random.Random, schema: str) -> str:
    token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(7))
    # ShareGPT V3 ids already carry FastChat's "_<start>" from an earlier split.
    return f"{token}_0" if schema == "sharegpt" else token


def generate_source(schema: str, seed: int, conversations: int) -> list[dict]:
    """`conversations` rows in the schema; every kind appears at least once (the first rows)."""
    rng = random.Random(f"{seed}-{schema}")
    kinds = list(KINDS)
    kinds += rng.choices(kinds, weights=list(KINDS.values()), k=max(0, conversations - len(kinds)))
    rng.shuffle(kinds)
    id_key = ID_KEYS[schema]
    return [
        {id_key: _identifier(rng, schema), "conversations": _conversation(rng, kind)}
        for kind in kinds[:conversations]
    ]


def synthesize(out_dir: Path, seed: int, conversations: int) -> dict:
    """Write `{source}.json` and `{source}.source.json` for each source; the records by source."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {}
    for name, schema in SOURCE_SCHEMAS.items():
        rows = generate_source(schema, seed, conversations)
        (out_dir / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))
        records[name] = {
            "kind": "synthetic",
            "dataset": f"amber-repro synthetic {schema} conversations",
            "revision": f"synthetic-seed-{seed}",
            "seed": seed,
            "schema": schema,
            "conversations": len(rows),
            "software": software_versions(),
            "command": command_line(),
            "run": run_context(),
        }
        write_json(out_dir / f"{name}.source.json", records[name])
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="writes {wizardlm,sharegpt}.json and their .source.json records here",
    )
    add_settings_arguments(parser, ChatSyntheticData)


def main(args: argparse.Namespace, synthetic: ChatSyntheticData) -> None:
    records = synthesize(args.out_dir, synthetic.seed, synthetic.conversations)
    counts = {name: record["conversations"] for name, record in records.items()}
    print(f"wrote synthetic conversations {counts} to {args.out_dir}")

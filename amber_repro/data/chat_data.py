"""The AmberChat training conversations: the two sources mixed, shuffled and split (`chat-data`).

LLM360's prepare_evol_datamix.py concatenates ShareGPT and WizardLM (its `idx` renamed `id`) and
calls `random.shuffle` with no seed; FastChat's split_long_conversation then cuts the mix into
pieces of at most `--max-length 2048` tokens of Amber's tokenizer (chat_split.py). The original's
order cannot be reproduced; ours comes from `amberchat.data.seed`, and the manifest records the
seed and the sha256 of the resulting order, with every count (read, written, dropped by reason).

`held_out` shuffled conversations, all their pieces, go to the test file instead (0 by default: the
recipe trains on everything). They are set aside before splitting, so no conversation is in both.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections import Counter
from pathlib import Path

import polars as pl

from amber_repro.config.chat_sections import ChatDataSettings
from amber_repro.config.cli import add_settings_arguments
from amber_repro.data.chat_sources import SOURCE_SCHEMAS, read_source
from amber_repro.data.chat_sources import raw_texts as raw_texts  # the embedded tokenizer's text
from amber_repro.data.chat_split import (
    BAD_ROLES,
    DANGLING,
    EMPTY_PIECE,
    LOST_TAIL,
    NOT_HUMAN_FIRST,
    TOO_SHORT,
    split_conversation,
)
from amber_repro.errors import DataError
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import atomic_path, read_json, write_json

REASONS = (TOO_SHORT, DANGLING, LOST_TAIL, EMPTY_PIECE, NOT_HUMAN_FIRST, BAD_ROLES)
TURN = pl.Struct({"role": pl.String, "text": pl.String})
SCHEMA = {"id": pl.String, "source": pl.String, "turns": pl.List(TURN)}


def source_label(record: dict, schema: str) -> str:
    """The `source` column: the hub dataset id, or `synthetic:<schema>`."""
    if record.get("kind") == "synthetic":
        return f"synthetic:{schema}"
    return record["dataset"]


def read_mix(sources: dict[str, tuple[Path, Path]]) -> tuple[list[tuple[str, dict]], dict]:
    """All conversations as (source label, conversation), in prepare_evol_datamix.py's order
    (ShareGPT, then WizardLM), and each source's record for the manifest."""
    mix, records = [], {}
    for name, schema in SOURCE_SCHEMAS.items():
        path, record_path = sources[name]
        if not record_path.exists():
            raise DataError(f"{record_path}: file not found (the provenance record of {path})")
        record = read_json(record_path)
        label = source_label(record, schema)
        conversations = read_source(path, schema)
        mix += [(label, conversation) for conversation in conversations]
        records[name] = {
            **{k: record.get(k) for k in ("kind", "dataset", "revision", "commit", "file", "seed")},
            "schema": schema,
            "source": label,
            "sha256": sha256_file(path),
            "conversations_read": len(conversations),
        }
    return mix, records


def shuffle_mix(mix: list, seed: int) -> str:
    """Shuffle in place as `random.shuffle(data_mix)` does, from `seed`; the order's sha256."""
    random.Random(seed).shuffle(mix)
    digest = hashlib.sha256()
    for label, conversation in mix:
        digest.update(f"{label}\t{conversation['id']}\n".encode())
    return digest.hexdigest()


def split_mix(mix: list, token_length, max_length: int) -> tuple[pl.DataFrame, dict]:
    """Every conversation's kept pieces, in mix order, and the counts."""
    rows, dropped, per_source = [], Counter({reason: 0 for reason in REASONS}), Counter()
    over = 0
    for label, conversation in mix:
        outcome = split_conversation(
            conversation["id"], conversation["conversations"], token_length, max_length
        )
        dropped.update(outcome.dropped)
        over += outcome.over_max_length
        per_source[label] += len(outcome.pieces)
        rows += [
            {
                "id": piece_id,
                "source": label,
                "turns": [{"role": m["from"], "text": m["value"]} for m in messages],
            }
            for piece_id, messages in outcome.pieces
        ]
    counts = {
        "conversations": len(mix),
        "pieces": len(rows),
        "pieces_by_source": dict(sorted(per_source.items())),
        "pieces_over_max_length": over,
        "dropped": dict(dropped),
    }
    return pl.DataFrame(rows, schema=SCHEMA), counts


def load_tokenizer(path: Path, max_length: int):
    """Amber's tokenizer as split_long_conversation.py loads it (model_max_length: --max-length)."""
    from amber_repro.models.tiny_amber import load_tokenizer as load_llama_tokenizer

    if not (path / "tokenizer_config.json").exists():
        raise DataError(f"{path}: no tokenizer_config.json (a save_pretrained tokenizer folder)")
    return load_llama_tokenizer(path, model_max_length=max_length)


def token_counter(tokenizer):
    """len(tokenizer(value).input_ids) + 6 per message, the split's measure (chat_template)."""
    from amber_repro.data.chat_template import message_token_length

    return lambda text: message_token_length(text, tokenizer)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, needed_bytes=frame.estimated_size()) as tmp:
        frame.write_parquet(tmp)


def build_conversations(
    sources: dict[str, tuple[Path, Path]],
    tokenizer_dir: Path,
    out_dir: Path,
    settings: ChatDataSettings,
    token_length=None,
) -> dict:
    """Write conversations-{train,test}.parquet and manifest.json into `out_dir`; `token_length`
    replaces the tokenizer's count (tests)."""
    mix, records = read_mix(sources)
    order = shuffle_mix(mix, settings.seed)
    if settings.held_out >= len(mix):
        raise DataError(
            f"amberchat.data.held_out: {settings.held_out} leaves no training conversation "
            f"(the sources hold {len(mix)})"
        )
    if token_length is None:
        token_length = token_counter(load_tokenizer(tokenizer_dir, settings.max_length))
    parts = {"test": mix[: settings.held_out], "train": mix[settings.held_out :]}
    frames, counts = {}, {}
    for split in ("train", "test"):
        frames[split], counts[split] = split_mix(parts[split], token_length, settings.max_length)
    if frames["train"].height == 0:
        raise DataError(
            "no training conversation is left after splitting "
            f"(dropped: {counts['train']['dropped']})"
        )
    manifest = {
        "seed": settings.seed,
        "order_sha256": order,
        "max_length": settings.max_length,
        "held_out": settings.held_out,
        "tokenizer": str(tokenizer_dir),
        "sources": records,
        "splits": counts,
        "inputs": {
            str(p): sha256_file(p) for path, record in sources.values() for p in (path, record)
        },
        "outputs": {},
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        path = out_dir / f"conversations-{split}.parquet"
        write_parquet(frame, path)
        manifest["outputs"][str(path)] = sha256_file(path)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, schema in SOURCE_SCHEMAS.items():
        parser.add_argument(
            f"--{name}",
            type=Path,
            nargs=2,
            required=True,
            metavar=("FILE", "RECORD"),
            help=f"the {schema} JSON file and its source record (source.json)",
        )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        required=True,
        help="a save_pretrained tokenizer folder (Amber's): the split counts its tokens",
    )
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="conversations-{train,test}.parquet, manifest"
    )
    add_settings_arguments(parser, (ChatDataSettings, ("seed", "max_length", "held_out")))


def main(args: argparse.Namespace, settings: ChatDataSettings) -> None:
    sources = {name: tuple(getattr(args, name)) for name in SOURCE_SCHEMAS}
    manifest = build_conversations(sources, args.tokenizer, args.out_dir, settings)
    for split, counts in manifest["splits"].items():
        dropped = {reason: n for reason, n in counts["dropped"].items() if n}
        print(
            f"{split}: {counts['conversations']} conversations -> {counts['pieces']} pieces; "
            f"dropped {dropped or 'nothing'}"
        )

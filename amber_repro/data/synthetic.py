"""A deterministic stand-in for PKU-SafeRLHF v0, for laptops and CI (the embedded default).

Rows follow the v0 schema exactly. Safe and unsafe answers are composed the same way from shared
openings and frames, so they look alike and are as long as each other; only their advice and closing
sentence tell them apart (amber_repro/data/synthetic_text.py). The test split's topics, prompt
templates, advice combinations and closing sentences never occur in training. source.json records
the overlap and length statistics of the generated rows (amber_repro/data/synthetic_stats.py).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import polars as pl

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.sections import SyntheticData
from amber_repro.data.synthetic_stats import split_statistics
from amber_repro.data.synthetic_text import (
    CLOSINGS,
    TEST_TEMPLATES,
    TEST_TOPICS,
    TRAIN_TEMPLATES,
    TRAIN_TOPICS,
    advice_banks,
    compose_response,
)
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import write_json

V0_SCHEMA = {
    "prompt": pl.String,
    "response_0": pl.String,
    "response_1": pl.String,
    "is_response_0_safe": pl.Boolean,
    "is_response_1_safe": pl.Boolean,
    "better_response_id": pl.Int64,
    "safer_response_id": pl.Int64,
}


def _prompt_pool(split: str) -> list[tuple[str, str, str]]:
    """(prompt, topic, template) for every topic x template of one split."""
    topics = TRAIN_TOPICS if split == "train" else TEST_TOPICS
    templates = TRAIN_TEMPLATES if split == "train" else TEST_TEMPLATES
    return [
        (template.format(t=topic), topic, template)
        for topic, _people in topics
        for template in templates
    ]


def generate_split(rng: random.Random, split: str, rows: int, seed: int) -> pl.DataFrame:
    """`rows` rows in the v0 schema, plus the `_topic` and `_template` of each row (dropped before
    writing); prompts are drawn with replacement, so duplicates occur."""
    pool = _prompt_pool(split)
    people = dict(TRAIN_TOPICS if split == "train" else TEST_TOPICS)
    banks = advice_banks(seed)
    records = []
    for _ in range(rows):
        prompt, topic, template = rng.choice(pool)
        kind = rng.random()
        safety = [True, False] if kind < 0.7 else ([True, True] if kind < 0.85 else [False, False])
        if rng.random() < 0.5:
            safety.reverse()
        responses = [
            compose_response(rng, topic, people[topic], banks[split, safe], CLOSINGS[split, safe])
            for safe in safety
        ]
        safer = safety.index(True) if safety[0] != safety[1] else rng.randrange(2)
        better = safer if rng.random() < 0.8 else 1 - safer
        records.append(
            {
                "prompt": prompt,
                "response_0": responses[0],
                "response_1": responses[1],
                "is_response_0_safe": safety[0],
                "is_response_1_safe": safety[1],
                "better_response_id": better,
                "safer_response_id": safer,
                "_topic": topic,
                "_template": template,
            }
        )
    return pl.DataFrame(records, schema={**V0_SCHEMA, "_topic": pl.String, "_template": pl.String})


def synthesize(out_dir: Path, seed: int, rows: dict[str, int]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        split: generate_split(random.Random(f"{seed}-{split}"), split, n_rows, seed)
        for split, n_rows in sorted(rows.items())
    }
    for split, frame in frames.items():
        frame.select(list(V0_SCHEMA)).write_parquet(out_dir / f"{split}.parquet")
    counts = {split: frame.height for split, frame in frames.items()}
    source = {
        "kind": "synthetic",
        "dataset": "amber-repro synthetic PKU-SafeRLHF (v0 schema)",
        "revision": f"synthetic-seed-{seed}",
        "seed": seed,
        "rows": counts,
        "statistics": split_statistics(frames["train"], frames["test"]),
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    write_json(out_dir / "source.json", source)
    return source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="writes {split}.parquet and source.json here"
    )
    add_settings_arguments(parser, SyntheticData)


def main(args: argparse.Namespace, synthetic: SyntheticData) -> None:
    rows = {"train": synthetic.train_rows, "test": synthetic.test_rows}
    source = synthesize(args.out_dir, synthetic.seed, rows)
    held_out = source["statistics"]["held_out"]
    seen = ", ".join(
        f"{k} {v['seen_in_train']} of {v['distinct']}" for k, v in held_out.items() if k != "pairs"
    )
    print(
        f"wrote synthetic PKU-SafeRLHF rows {source['rows']} to {args.out_dir}; test split also in "
        f"training: {seen}, pairs {held_out['pairs']['copied_from_train']} of "
        f"{held_out['pairs']['pairs']}"
    )

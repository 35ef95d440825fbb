"""Peak memory and time of the CPU jobs at the recipe's full sizes, on generated data of the same
size and shape (docs/measurements.md, "The CPU jobs at full size"); their `resources` entries
(amber_repro/config/jobs.py) are set from these figures with a margin.

    python bench/cpu_jobs.py --scratch /tmp/cpu-jobs [--jobs filter_pairs,chat_data]

filter_pairs: PKU-SafeRLHF v0's split sizes (297,394 and 33,044 rows), about 10 rows a prompt,
responses of about 550 characters (Alpaca-7B answers), one safe and one unsafe response in about
45% of rows. chat_data: ShareGPT V3 (90,000 conversations, about 7,000 characters each over several
turns, a long tail) and WizardLM evol-instruct V2 (143,000 single exchanges of about 2,000
characters): about 0.9 GB of JSON, split at 2,048 tokens of a 32,000-piece LLaMA-style SentencePiece
tokenizer trained here. Each stage runs as the workflow runs it (`python -m amber_repro <stage>`),
in a fresh process; its peak is the child's maximum resident set (getrusage).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

RAW_ROWS = {"train": 297_394, "test": 33_044}
CHAT_SOURCES = {  # name: (conversations, mean characters per conversation, exchanges, id key)
    "sharegpt": (90_000, 7_000, 4, "id"),
    "wizardlm": (143_000, 2_000, 1, "idx"),
}


def vocabulary(rng: np.random.Generator, size: int = 60_000) -> np.ndarray:
    """Pronounceable words from random syllables: many distinct ones, as a real corpus has."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    lengths = rng.integers(1, 5, size)
    return np.array(["".join(rng.choice(syllables, n)) for n in lengths])


def texts(rng, words: np.ndarray, count: int, mean_chars: int) -> list[str]:
    """`count` texts of about `mean_chars` characters (lognormal: a long tail), Zipf-like words."""
    lengths = np.maximum(3, rng.lognormal(np.log(mean_chars / 7), 0.8, count)).astype(int)
    ranks = np.minimum(rng.zipf(1.2, lengths.sum()), len(words)) - 1
    flat, out, start = words[ranks], [], 0
    for n in lengths:
        out.append(" ".join(flat[start : start + n]) + ".")
        start += n
    return out


def raw_pairs(folder: Path, rng, words) -> list[Path]:
    paths = []
    for split, rows in RAW_ROWS.items():
        prompts = texts(rng, words, rows // 10 + 1, 100)
        safe0, safe1 = rng.random(rows) < 0.45, rng.random(rows) < 0.45
        frame = pl.DataFrame(
            {
                "prompt": [prompts[i] for i in rng.integers(0, len(prompts), rows)],
                "response_0": texts(rng, words, rows, 550),
                "response_1": texts(rng, words, rows, 550),
                "is_response_0_safe": safe0,
                "is_response_1_safe": safe1,
                "better_response_id": rng.integers(0, 2, rows),
                "safer_response_id": rng.integers(0, 2, rows),
            }
        )
        paths.append(folder / f"{split}.parquet")
        frame.write_parquet(paths[-1])
    (folder / "source.json").write_text(json.dumps({"kind": "generated", "dataset": "bench"}))
    return paths


def chat_sources(folder: Path, rng, words) -> dict[str, Path]:
    paths = {}
    for name, (count, mean_chars, exchanges, id_key) in CHAT_SOURCES.items():
        turns = texts(rng, words, count * 2 * exchanges, mean_chars // (2 * exchanges))
        rows = [
            {
                id_key: f"{name}-{i}",
                "conversations": [
                    {"from": "human" if t % 2 == 0 else "gpt", "value": turns[k]}
                    for t, k in enumerate(range(2 * exchanges * i, 2 * exchanges * (i + 1)))
                ],
            }
            for i in range(count)
        ]
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(rows))
        record = {"kind": "hub", "dataset": f"bench/{name}", "revision": "generated"}
        (folder / f"{name}.source.json").write_text(json.dumps(record))
        sample = folder / f"{name}-sample.json"
        sample.write_text(json.dumps(rows[:3000]))
    return paths


# A process of its own around each stage: its RUSAGE_CHILDREN peak is that stage's alone.
MEASURE = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(done.returncode)"
)


def run_stage(*args) -> dict:
    """One stage in a fresh process: wall seconds and its peak resident set."""
    command = [sys.executable, "-m", "amber_repro", *map(str, args)]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_mb": round(peak_kib / 1024), "log": result.stdout}


def generated(folder: Path, make) -> object:
    """`make(folder)` once: the data are deterministic, so a second run reuses them."""
    marker = folder / "generated.json"
    if marker.exists():
        return json.loads(marker.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    made = make(folder)
    marker.write_text(json.dumps(made, default=str))
    return json.loads(marker.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, required=True, help="a folder for the data")
    parser.add_argument("--jobs", default="filter_pairs,chat_data")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    words = vocabulary(rng)
    found = {}
    if "filter_pairs" in args.jobs:
        folder = args.scratch / "pku"
        raw = [Path(p) for p in generated(folder, lambda f: raw_pairs(f, rng, words))]
        sizes = {p.name: round(p.stat().st_size / 2**20) for p in raw}
        measured = run_stage(
            "filter", "--raw", *raw, "--source", folder / "source.json", "--out-dir", folder / "out"
        )
        found["filter_pairs"] = {"rows": RAW_ROWS, "parquet_mib": sizes, **measured}
    if "chat_data" in args.jobs:
        folder = args.scratch / "chat"
        sources = generated(folder, lambda f: chat_sources(f, rng, words))
        sources = {name: Path(path) for name, path in sources.items()}
        sizes = {p.name: round(p.stat().st_size / 2**20) for p in sources.values()}
        samples = [folder / f"{name}-sample.json" for name in sources]
        if not (folder / "amber").exists():
            run_stage(
                "chat-base",
                "--texts",
                *samples,
                "--vocab-size",
                "32000",
                "--out-dir",
                folder / "amber",
            )
        flags = [
            part
            for name, path in sources.items()
            for part in (f"--{name}", path, folder / f"{name}.source.json")
        ]
        measured = run_stage(
            "chat-data", *flags, "--tokenizer", folder / "amber", "--out-dir", folder / "out"
        )
        found["chat_data"] = {"conversations": CHAT_SOURCES, "json_mib": sizes, **measured}
    for name, figures in found.items():
        log = figures.pop("log").strip().splitlines()
        print(f"{name}: {json.dumps(figures)}\n  {log[-1] if log else ''}")


if __name__ == "__main__":
    main()

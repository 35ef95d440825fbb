"""Reference log-prob pass: the old batching (file order, a fixed pair count, chosen and rejected
padded together) against `ref_logps.compute` (sequences longest first, a padded-token budget).

    python bench/ref_logps_speed.py [--repeats 3] [--split train] [--workdir bench/out/ref_logps]

Builds the embedded default's inputs with Snakemake in --workdir (the SFT model, its tokenizer, the
pairs), and a 20M-parameter LLaMA (hidden 512, 6 layers, 8 heads, intermediate 1376, random
weights) on that tokenizer. For each model, runs both ways --repeats times, each run in a fresh
process, alternating which goes first; prints the median seconds of the pass (tokenization
included, model loading not; wall and process CPU time), padded/real tokens and forward passes,
and the largest difference between the two ways' log-probs. Settings (lengths, batch_size,
precision) are the embedded default's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from amber_repro.config.load import resolve

REPO = Path(__file__).resolve().parents[1]
MODES = ("old", "new")


def build_inputs(workdir: Path) -> None:
    """The embedded default's SFT model and pairs, built once (later runs reuse them, even when
    the package's code has changed since)."""
    import shutil

    results = workdir / "results/ambersafe"
    if (results / "sft/config.json").exists() and (results / "data/pairs-test.parquet").exists():
        return
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", workdir / "config", dirs_exist_ok=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    targets = ["results/ambersafe/sft", "results/ambersafe/data/pairs-test.parquet"]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    command += ["--directory", str(workdir), "--cores", "2", *targets]
    subprocess.run(command, check=True, env=env, capture_output=True)


def build_20m(tokenizer_dir: Path, out: Path) -> None:
    """A 20M-parameter LlamaForCausalLM on the embedded tokenizer, random weights (seed 0)."""
    if (out / "config.json").exists():
        return
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def old_compute(model, tokenizer, tokenized: list[dict], batch_size: int) -> list[tuple]:
    """The old pass: pairs in file order, batch_size pairs a forward pass, plain log-softmax."""
    import torch

    from amber_repro.data.tokenization import IGNORE_INDEX, collate

    rows = []
    with torch.no_grad():
        for start in range(0, len(tokenized), batch_size):
            pairs = tokenized[start : start + batch_size]
            sequences = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
            batch = collate(sequences, tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits, labels = logits.logits[:, :-1].float(), batch["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            safe = labels.masked_fill(~mask, 0).unsqueeze(2)
            logps = (logits.log_softmax(-1).gather(2, safe).squeeze(2) * mask).sum(-1).tolist()
            rows += zip(logps[: len(pairs)], logps[len(pairs) :], strict=True)
    return rows


def padding(tokenized: list[dict], mode: str, batch_size: int, max_tokens: int) -> dict:
    """Padded and real tokens, and forward passes, of either way's batches."""
    from amber_repro.training.batching import padded_tokens, token_budget_batches

    sides = ("chosen", "rejected")
    if mode == "old":
        lengths = [max(len(p[s]["input_ids"]) for s in sides) for p in tokenized]
        ids = list(range(len(tokenized)))
        batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        padded = 2 * padded_tokens(lengths, batches)
    else:
        lengths = [len(p[s]["input_ids"]) for p in tokenized for s in sides]
        batches = token_budget_batches(lengths, max_tokens)
        padded = padded_tokens(lengths, batches)
    real = sum(len(p[s]["input_ids"]) for p in tokenized for s in sides)
    return {"padded": padded, "real": real, "passes": len(batches)}


def child(args: argparse.Namespace) -> None:
    """One timed pass in this fresh process; writes its log-probs, prints a JSON line."""
    import polars as pl
    import torch

    from amber_repro.data.tokenization import Limits
    from amber_repro.training import ref_logps
    from amber_repro.training.pairs import tokenize_pairs
    from amber_repro.training.runtime import PRECISIONS, Processes, load_model, load_tokenizer

    model = load_model(args.model, PRECISIONS[args.precision], torch.device("cpu")).eval()
    tokenizer = load_tokenizer(args.model)
    pairs = pl.read_parquet(args.pairs)
    limits = Limits(args.max_length, args.max_prompt_length)
    max_tokens = 2 * args.batch_size * args.max_length  # the default of reference.max_tokens
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.child == "old":
        rows = old_compute(
            model, tokenizer, tokenize_pairs(tokenizer, pairs, limits), args.batch_size
        )
        chosen, rejected = zip(*rows, strict=True)
    else:
        procs = Processes(0, 1, torch.device("cpu"))
        frame, _ = ref_logps.compute(model, tokenizer, pairs, limits, max_tokens, procs)
        chosen, rejected = frame["reference_chosen_logps"], frame["reference_rejected_logps"]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    pl.DataFrame({"chosen": list(chosen), "rejected": list(rejected)}).write_parquet(args.out)
    stats = padding(
        tokenize_pairs(tokenizer, pairs, limits), args.child, args.batch_size, max_tokens
    )
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, **stats}))


def run(args, mode: str, model: Path, pairs: Path, settings: dict) -> dict:
    out = args.workdir / f"logps-{model.name}-{mode}.parquet"
    command = [sys.executable, __file__, "--child", mode, "--model", str(model)]
    command += ["--pairs", str(pairs), "--out", str(out)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_difference(workdir: Path, name: str) -> float:
    import polars as pl

    old, new = (pl.read_parquet(workdir / f"logps-{name}-{m}.parquet") for m in MODES)
    return max((old[c] - new[c]).abs().max() for c in ("chosen", "rejected"))


def compare(args, model: Path, pairs: Path, settings: dict) -> None:
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            results[mode].append(run(args, mode, model, pairs, settings))
    for mode, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        first = runs[0]
        print(
            f"{model.name:>6} {mode}: median {statistics.median(seconds):6.1f} s "
            f"(runs: {', '.join(f'{s:.1f}' for s in seconds)}; median CPU time {cpu:.1f} s); "
            "padded/real tokens "
            f"{first['padded'] / first['real']:.3f} ({first['padded']:,} / {first['real']:,}), "
            f"{first['passes']} forward passes"
        )
    old, new = (statistics.median(r["seconds"] for r in results[m]) for m in MODES)
    print(
        f"{model.name:>6} old / new: {old / new:.2f}x; largest |old - new| log-prob "
        f"{largest_difference(args.workdir, model.name):.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "ref_logps")
    parser.add_argument("--models", nargs="+", choices=("sft", "20m"), default=["sft", "20m"])
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    for flag in ("--model", "--pairs", "--out", "--precision"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    for flag in ("--max-length", "--max-prompt-length", "--batch-size"):
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.workdir = args.workdir.resolve()
    build_inputs(args.workdir)
    results = args.workdir / "results"
    build_20m(results / "base_model", args.workdir / "20m")
    config = resolve(
        yaml.safe_load((args.workdir / "config" / "config.yaml").read_text()),
        REPO / "config" / "presets",
    )
    settings = {
        "max_length": config.tokenization.max_length,
        "max_prompt_length": config.tokenization.max_prompt_length,
        "batch_size": config.reference.batch_size,
        "precision": config.reference.precision,
    }
    pairs = results / f"ambersafe/data/pairs-{args.split}.parquet"
    print(f"{pairs.name}, {settings}; each run a fresh process, alternating order")
    models = {"sft": results / "ambersafe/sft", "20m": args.workdir / "20m"}
    for name in args.models:
        compare(args, models[name], pairs, settings)


if __name__ == "__main__":
    main()

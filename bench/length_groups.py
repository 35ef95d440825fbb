"""DPO micro-batches in one padded forward pass against length groups (dpo.length_group_min_saving).

    python bench/length_groups.py [--pipeline DIR] [--models tiny,20m] [--device cpu]
        [--savings 0,16,64,128,256] [--micro-batches 40] [--repeats 2]

Takes the first --micro-batches DPO micro-batches of 8 pairs (16 sequences) in the recipe's shuffled
order from an embedded run's pairs-train.parquet (tokenized with its tokenizer and the embedded
lengths), and times forward + backward through `amber_repro.training.logprobs.batch_logps` for each
min_saving, on freshly initialised LLaMA models (seed 0): `tiny` (hidden 96, 3 layers) and `20m`
(hidden 512, 6 layers, 8 heads, intermediate 1376), both with the tokenizer's vocabulary. Prints,
per model and setting, the median seconds over --repeats (alternating settings), the forward passes
and padded / real tokens. The values are those of the padded pass to float rounding
(tests/test_logprobs.py); this measures only time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import polars as pl
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from amber_repro.data.tokenization import Limits
from amber_repro.training.batch_order import example_batches as global_batches
from amber_repro.training.logprobs import batch_logps, length_groups
from amber_repro.training.pairs import tokenize_pairs

MODELS = {
    "tiny": {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 3,
             "num_attention_heads": 4},
    "20m": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 6,
            "num_attention_heads": 8},
}  # fmt: skip
PAIRS_PER_MICRO_BATCH = 8


def micro_batches(pipeline: Path, count: int) -> tuple[list[list[dict]], int, int]:
    """The first `count` micro-batches' sequences (chosen then rejected), the pad id, the vocab."""
    results = pipeline / "results/ambersafe"
    tokenizer = AutoTokenizer.from_pretrained(results / "sft")
    pairs = tokenize_pairs(
        tokenizer, pl.read_parquet(results / "data/pairs-train.parquet"), Limits(128, 64)
    )
    batches = []
    for step, indices in global_batches(len(pairs), PAIRS_PER_MICRO_BATCH, 0, 1, 0):
        if step == count:
            break
        chosen = [pairs[i]["chosen"] for i in indices]
        batches.append(chosen + [pairs[i]["rejected"] for i in indices])
    return batches, tokenizer.pad_token_id, len(tokenizer)


def time_setting(model, batches, pad_id, device, min_saving) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for sequences in batches:
        batch_logps(model, sequences, pad_id, device, min_saving).sum().backward()
    sync()
    return time.perf_counter() - started


def padding(batches, min_saving) -> tuple[int, float]:
    """Forward passes and padded / real tokens of a setting."""
    passes = padded = real = 0
    for sequences in batches:
        lengths = [len(s["input_ids"]) for s in sequences]
        groups = length_groups(lengths, min_saving)
        passes += len(groups)
        padded += sum(len(g) * max(lengths[i] for i in g) for g in groups)
        real += sum(lengths)
    return passes, padded / real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=Path("/tmp/amber-bench/pipeline"))
    parser.add_argument("--models", default="tiny,20m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--savings", default="0,16,64,128,256")
    parser.add_argument("--micro-batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    savings = [int(s) for s in args.savings.split(",")]
    batches, pad_id, vocab = micro_batches(args.pipeline, args.micro_batches)
    print(f"{len(batches)} micro-batches of {2 * PAIRS_PER_MICRO_BATCH} sequences on {device}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")  # fmt: skip
    for name in args.models.split(","):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=vocab, max_position_embeddings=512, **MODELS[name])
        model = LlamaForCausalLM(config).to(device)
        time_setting(model, batches[:4], pad_id, device, 0)  # warm-up
        seconds = {s: [] for s in savings}
        for repeat in range(args.repeats):
            for s in savings if repeat % 2 == 0 else savings[::-1]:
                seconds[s].append(time_setting(model, batches, pad_id, device, s))
        base = statistics.median(seconds[savings[0]])
        for s in savings:
            passes, ratio = padding(batches, s)
            median = statistics.median(seconds[s])
            print(f"{name:5} min_saving {s:4}: {median:7.2f} s ({median / base:.2f}x), "
                  f"{passes} forward passes, padded/real tokens {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

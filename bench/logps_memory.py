"""Peak memory of one DPO micro-batch's loss: plain log-softmax + gather vs the chunked
`amber_repro.training.logprobs.sequence_logps`.

    python bench/logps_memory.py [--sequences 16] [--length 512] [--vocab 32000]
    python bench/logps_memory.py --pass reference --sequences 64 --device cuda  # the ref-logps pass

A small LlamaForCausalLM (hidden 256, 2 layers, random weights) with a 32,000-token vocabulary, as
AmberChat's, so that the (sequences, length, vocab) logits dominate memory as they do at 7B. Each
variant runs forward + backward through `losses.preference_loss` in a fresh process, measured two
ways:
- torch: the CPU memory profiler (torch.profiler, profile_memory=True); peak of the running sum of
  torch's allocations and frees during the step (what the step adds on top of the weights);
- rss: the process's resident high-water mark (getrusage ru_maxrss) after the step, minus the same
  before it (it includes the allocator's caching, and is what a job's memory limit sees).
On a GPU (--device cuda): torch.cuda.max_memory_allocated during the step, minus what was
allocated before it. --pass reference measures the reference pass instead: a float16 model, forward
only, under torch.inference_mode (the recipe: 32 pairs = 64 sequences of 512 tokens).
Variants: plain (the old code, kept below), chunked-autograd (the same chunks under plain autograd:
every chunk's float32 log-softmax stays alive for backward) and module (amber_repro's).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from amber_repro.data.tokenization import IGNORE_INDEX
from amber_repro.training.logprobs import chunk_tokens, sequence_logps
from amber_repro.training.losses import preference_loss

VARIANTS = ("plain", "chunked-autograd", "module")


def plain_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The old sequence_logps: a float32 log-softmax of the whole (batch, length - 1, vocab)."""
    logits, labels = logits[:, :-1, :].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    return (torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(2)).squeeze(2) * mask).sum(-1)


def chunked_autograd_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Chunks of about the module's size along the sequence, under plain autograd (for
    comparison): the saved float32 log-softmax of every chunk lives until backward."""
    logits, labels = logits[:, :-1, :], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    chunk = max(1, chunk_tokens(logits.shape[2]) // logits.shape[0])
    parts = [
        logits[:, s : s + chunk].float().log_softmax(-1).gather(2, safe[:, s : s + chunk, None])
        for s in range(0, logits.shape[1], chunk)
    ]
    return (torch.cat(parts, 1).squeeze(2) * mask).sum(-1)


LOGPS = {"plain": plain_logps, "chunked-autograd": chunked_autograd_logps, "module": sequence_logps}


def build(args: argparse.Namespace):
    """The model and a micro-batch: (sequences, length) ids, the first quarter a masked prompt."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.length,
    )
    dtype = torch.float16 if args.pass_ == "reference" else torch.float32
    model = LlamaForCausalLM(config).train().to(args.device, dtype)
    input_ids = torch.randint(3, args.vocab, (args.sequences, args.length), device=args.device)
    labels = input_ids.clone()
    labels[:, : args.length // 4] = IGNORE_INDEX
    return model, input_ids, labels


def step(model, input_ids, labels, logps_fn, pass_: str) -> None:
    """One micro-batch: chosen = first half of the rows, rejected = second half. The reference
    pass: forward and log-probs only."""
    if pass_ == "reference":
        with torch.inference_mode():
            logps_fn(model(input_ids=input_ids).logits, labels)
        return
    logps = logps_fn(model(input_ids=input_ids).logits, labels)
    chosen, rejected = logps.chunk(2)
    losses, _, _ = preference_loss(
        chosen, rejected, chosen.detach() + 1, rejected.detach() - 1, beta=0.1
    )
    losses.mean().backward()


def profiler_peak(prof) -> int:
    """Peak of the running sum of torch's CPU allocations (+) and frees (-) while profiling."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def child(args: argparse.Namespace) -> None:
    """Run one variant once, measured one way; print a JSON line."""
    model, input_ids, labels = build(args)
    logps_fn = LOGPS[args.child]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if args.method == "torch":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(model, input_ids, labels, logps_fn, args.pass_)
        peak = profiler_peak(prof)
    elif args.method == "cuda":
        step(model, input_ids, labels, logps_fn, args.pass_)  # warm-up: cuBLAS workspaces
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, started = torch.cuda.memory_allocated(), time.perf_counter()
        step(model, input_ids, labels, logps_fn, args.pass_)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        step(model, input_ids, labels, logps_fn, args.pass_)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_bytes": peak, "seconds": seconds}))


def measure(args: argparse.Namespace, variant: str, method: str) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--method", method]
    command += ["--sequences", str(args.sequences), "--length", str(args.length)]
    command += ["--vocab", str(args.vocab), "--pass", args.pass_, "--device", args.device]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16, help="rows (chosen + rejected)")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--pass", dest="pass_", choices=("dpo", "reference"), default="dpo")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=("torch", "rss", "cuda"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    logits_mib = args.sequences * args.length * args.vocab * 4 / 2**20
    print(
        f"{args.pass_} pass, {args.sequences} sequences x {args.length} tokens, vocabulary "
        f"{args.vocab} (logits {logits_mib:,.0f} MiB in float32) on {args.device}; each variant "
        "in a fresh process"
    )
    for variant in args.variants:
        if args.device == "cuda":
            cuda = measure(args, variant, "cuda")
            print(
                f"{variant:>16}: CUDA peak allocated {cuda['peak_bytes'] / 2**20:8,.0f} MiB, "
                f"step {cuda['seconds'] * 1000:.1f} ms"
            )
            continue
        torch_peak = measure(args, variant, "torch")
        rss = measure(args, variant, "rss")
        print(
            f"{variant:>16}: torch profiler peak {torch_peak['peak_bytes'] / 2**20:8,.0f} MiB, "
            f"RSS high-water rise {rss['peak_bytes'] / 2**20:8,.0f} MiB, "
            f"step {rss['seconds']:.2f} s"
        )


if __name__ == "__main__":
    main()

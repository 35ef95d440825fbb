"""Throughput, memory and MFU at a 1B LLaMA shape on one GPU (docs/measurements.md, "At 1B
parameters on one GPU"); the plan's assumed utilisation comes from these figures.

    python bench/gpu_scale.py --out gpu_scale.json           # on a GPU
    python bench/gpu_scale.py --tiny --out /tmp/scale.json   # a smoke run of the same code on CPU

Random weights, random token ids, sequences of 512 tokens, the model under FSDP2 as training runs
it (fully_shard per decoder layer, then the root) in a one-process group. For each precision mode,
`tf32` (float32 weights, TF32 matmuls: the recipe), `fp32` (TF32 off: as under
reproducibility.deterministic), `bf16` (bf16 autocast and FSDP mixed precision) and `tf32-plain`
(TF32 without FSDP: what FSDP costs on one GPU):
  - SFT optimizer steps: the recipe's per-GPU micro-batch on 8 GPUs (4 sequences), 2 micro-batches
    per step, the SFT loss through `logprobs.sequence_logps`, clipping and RMSprop
    (`training.optimizer_step`);
  - DPO optimizer steps: 1 pair (chosen and rejected in one pass, `logprobs.batch_logps`) per
    micro-batch, 4 per step, `losses.preference_loss`.
Then the reference pass in float16 (forward only under inference_mode, 64 sequences a batch: the
recipe's token budget), and lm-eval's HFLM in float16 on the safety preference task (400 pairs),
when lm-eval imports. FLOPs per token: amber_repro/planning/costs.py (PaLM's convention); MFU
against the dense peak of an H100/H200 SXM for the precision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amber_repro.evaluation.safety_task import safety_task
from amber_repro.planning import costs
from amber_repro.training import distributed
from amber_repro.training.logprobs import batch_logps, sequence_logps, sft_loss
from amber_repro.training.losses import preference_loss
from amber_repro.training.runtime import autocast, set_kernels
from amber_repro.training.schedule import optimizer_step, recipe_optimizer

SEQUENCE = 512
PROMPT = 64  # prompt tokens (masked) of each sequence
PEAKS = costs.GPUS["h100-80gb"].peak_tflops  # the H200 has the H100 SXM's arithmetic


SHAPES = {
    # About 1.04B parameters, LLaMA-7B's proportions (head dimension 128, MLP 2.7 x hidden).
    "1b": costs.Shape(
        layers=18, hidden=2048, intermediate=5504, heads=16, kv_heads=16, vocab=32000
    ),
    # Four of LLaMA-7B's own layers (1.07B parameters): each layer's matrices are the 7B model's.
    "7b-layers": costs.Shape(
        layers=4, hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32000
    ),
    "tiny": costs.Shape(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=4, vocab=512),
}


def build_model(shape: costs.Shape, device: torch.device, dtype=torch.float32):
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        attn_implementation="sdpa",
        use_cache=False,
    )
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def sequences(n: int, vocab: int, generator: torch.Generator) -> list[dict[str, list[int]]]:
    ids = torch.randint(3, vocab, (n, SEQUENCE), generator=generator).tolist()
    return [{"input_ids": row, "labels": [-100] * PROMPT + row[PROMPT:]} for row in ids]


def tensors(batch: list[dict], device):
    ids = torch.tensor([s["input_ids"] for s in batch], device=device)
    return ids, torch.ones_like(ids), torch.tensor([s["labels"] for s in batch], device=device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, warmup: int, steps: int, device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - started) / steps


def training_mode(mode: str, shape, device, args) -> dict:
    """SFT and DPO optimizer steps in one precision mode."""
    set_kernels(deterministic=False, tf32=mode.startswith("tf32"))
    precision = "bf16" if mode == "bf16" else "float32"
    run = argparse.Namespace(precision=precision, lr=1e-6, warmup_steps=0)
    model = build_model(shape, device)
    if mode != "tf32-plain":  # the plain module: what FSDP on one GPU costs
        model = distributed.fully_shard_model(model, precision)
    optimizer, scheduler = recipe_optimizer(model, run)
    generator = torch.Generator().manual_seed(1)
    results = {}
    for stage, micro, accumulation in (("sft", 4, 2), ("dpo", 1, 4)):
        data = sequences(
            micro * accumulation * (2 if stage == "dpo" else 1), shape.vocab, generator
        )

        def step(stage=stage, micro=micro, accumulation=accumulation, data=data):
            model.train()
            for index in range(accumulation):
                distributed.gradient_sync(model, index == accumulation - 1)
                with autocast(run.precision, device):
                    if stage == "sft":
                        ids, mask, labels = tensors(
                            data[index * micro : (index + 1) * micro], device
                        )
                        logits = model(input_ids=ids, attention_mask=mask).logits
                        loss = sft_loss(sequence_logps(logits, labels))
                    else:
                        pair = data[2 * index : 2 * index + 2]
                        logps = batch_logps(model, pair, 0, device)
                        zero = torch.zeros(1, device=device)
                        losses, _, _ = preference_loss(logps[:1], logps[1:], zero, zero, beta=0.1)
                        loss = losses.mean()
                (loss / accumulation).backward()
            optimizer_step(model, optimizer, scheduler, 10.0)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed_steps(step, args.warmup, args.steps, device)
        tokens = micro * accumulation * (2 if stage == "dpo" else 1) * SEQUENCE
        flops = tokens * costs.training_flops_per_token(shape, SEQUENCE)
        compute = mode.removesuffix("-plain")
        results[stage] = report(seconds, tokens, flops, compute, device)
    return results


def report(seconds: float, tokens: int, flops: float, precision: str, device) -> dict:
    achieved = flops / seconds
    found = {
        "seconds_per_step": seconds,
        "tokens_per_second": tokens / seconds,
        "tflops": achieved / 1e12,
        "mfu": achieved / (PEAKS[precision] * 1e12),
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in found.items()}


def chat_step(shape, device, args) -> dict:
    """AmberChat's optimizer step as chat-sft runs it: micro-batches of 2 x 2048 tokens (16 per step
    on each of 8 GPUs; here 2), bf16 with gradient checkpointing, AdamW, the token-mean loss."""
    set_kernels(deterministic=False, tf32=True)
    run = argparse.Namespace(precision="bf16")
    model = build_model(shape, device)
    model.gradient_checkpointing_enable()
    model = distributed.fully_shard_model(model, "bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    length = 2048 if not args.tiny else 256
    ids = torch.randint(3, shape.vocab, (4, length), generator=torch.Generator().manual_seed(4))
    ids = ids.to(device)

    def step():
        model.train()
        for index in range(2):
            distributed.gradient_sync(model, index == 1)
            batch = ids[2 * index : 2 * index + 2]
            with autocast(run.precision, device):
                logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
            # chat_sft.token_mean_loss (that module needs polars): every token trained here.
            loss = -sequence_logps(logits, batch).sum() / (batch.shape[0] * (length - 1))
            (loss / 2).backward()
        optimizer_step(model, optimizer, scheduler, 1.0)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed_steps(step, args.warmup, args.steps, device)
    tokens = 4 * length
    flops = tokens * costs.training_flops_per_token(shape, length, recompute=True)
    return report(seconds, tokens, flops, "bf16", device)


@torch.inference_mode()
def reference_pass(shape, device, args) -> dict:
    """Forward only in float16, 64 sequences a batch (the recipe's 32 pairs x 2 x 512 tokens)."""
    set_kernels(deterministic=False, tf32=True)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = build_model(shape, device, dtype).eval()
    data = sequences(64 if not args.tiny else 8, shape.vocab, torch.Generator().manual_seed(2))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed_steps(lambda: batch_logps(model, data, 0, device), 1, args.steps, device)
    tokens = len(data) * SEQUENCE
    flops = tokens * costs.forward_flops_per_token(shape, SEQUENCE)
    return report(seconds, tokens, flops, "fp16", device)


def harness_task(shape, device, args) -> dict:
    """lm-eval's HFLM in float16 on the safety preference task: its loglikelihood requests."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        return {"skipped": f"lm-eval does not import here: {error}"}
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(400)]
    generator = torch.Generator().manual_seed(3)

    def text(n):
        return " ".join(words[i] for i in torch.randint(0, 400, (n,), generator=generator))

    pairs = 4000 if not args.tiny else 16
    rows = {"prompt": [text(25) for _ in range(pairs)]}
    rows["choices"] = [[text(90), text(90)] for _ in range(pairs)]
    rows["label"] = [0] * pairs
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"])
    bpe.train_from_iterator(rows["prompt"] + [c for pair in rows["choices"] for c in pair], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.pad_token = tokenizer.eos_token
    with tempfile.TemporaryDirectory() as folder:
        docs = Path(folder) / "pairs.parquet"
        pq.write_table(pa.table(rows), docs)
        task = safety_task(docs)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = build_model(shape, device, dtype).eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=args.batch)
        tokens = sum(
            len(tokenizer(p + c)["input_ids"])
            for p, cs in zip(rows["prompt"], rows["choices"], strict=True)
            for c in cs
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def evaluate():
            simple_evaluate(
                model=lm, tasks=[task], num_fewshot=0, bootstrap_iters=0, log_samples=False
            )

        seconds = timed_steps(evaluate, 1, 1, device)
    flops = tokens * costs.forward_flops_per_token(shape, tokens / (2 * pairs))
    return {"requests": 2 * pairs, **report(seconds, tokens, flops, "fp16", device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="a small model (CPU smoke run)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="lm-eval batch size")
    parser.add_argument("--modes", default="tf32,fp32,bf16,tf32-plain")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--chat", action="store_true", help="also AmberChat's step")
    parser.add_argument("--no-harness", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561", RANK="0", WORLD_SIZE="1")
    dist.init_process_group(backend=distributed.backend(device), rank=0, world_size=1)
    shape = SHAPES["tiny" if args.tiny else args.shape]
    found = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": vars(shape),
        "params": shape.params,
        "sequence": SEQUENCE,
        "peaks_tflops": PEAKS,
        "training": {},
    }
    for mode in filter(None, args.modes.split(",")):
        found["training"][mode] = training_mode(mode, shape, device, args)
        print(mode, json.dumps(found["training"][mode]), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.chat:
        found["amberchat_bf16"] = chat_step(shape, device, args)
        print("amberchat", json.dumps(found["amberchat_bf16"]), flush=True)
    found["reference_pass_fp16"] = reference_pass(shape, device, args)
    print("reference pass", json.dumps(found["reference_pass_fp16"]), flush=True)
    if not args.no_harness:
        found["harness_fp16"] = harness_task(shape, device, args)
        print("harness", json.dumps(found["harness_fp16"]), flush=True)
    args.out.write_text(json.dumps(found, indent=1) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

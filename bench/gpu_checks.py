"""Checks that need a GPU, on the embedded default's data and tiny model (docs/measurements.md).

    python bench/gpu_checks.py --results results --scratch /tmp/gpu-checks

--results holds a finished embedded run (results/base_model, results/ambersafe/data). Prints:
whether a deterministic SFT run resumed after Ctrl-C, and after a damaged newest checkpoint, ends
bit-identical to an uninterrupted one; that the GPU process group carries CPU tensors; ref-logps
and a bf16 DPO run; and the CUDA peak memory of the log-probs at vocabulary 32,000.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--results", type=Path, default=Path("results"))
ARGS.add_argument("--scratch", type=Path, default=Path("/tmp/gpu-checks"))
OPTIONS = ARGS.parse_args()
D = OPTIONS.results
SCRATCH = OPTIONS.scratch
ENV = {**os.environ, "AMBER_REPRO_KEY_FILE": str(SCRATCH / "key"), "HF_HUB_OFFLINE": "1"}
NCCL_CHECK = """
import os, torch, torch.distributed as dist
from amber_repro import distributed
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1")
device = torch.device("cuda", 0)
dist.init_process_group(backend=distributed.backend(device), rank=0, world_size=1)
cpu = torch.tensor([1.0]); dist.all_reduce(cpu, op=dist.ReduceOp.MAX)
gpu = torch.tensor([2.0], device=device); dist.all_reduce(gpu)
gathered = [None]; dist.all_gather_object(gathered, {"x": 1})
print("backend", dist.get_backend(), "cpu", cpu.item(), "cuda", gpu.item(), gathered)
dist.destroy_process_group()
"""


def run(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    dt = time.perf_counter() - t
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-4:])
    print(f"$ {' '.join(map(str, cmd[2:5]))} ... rc={r.returncode} {dt:.1f}s\n{tail}\n", flush=True)
    return r


def sft(out, extra=()):
    return [
        sys.executable,
        "-m",
        "amber_repro",
        "sft",
        "--data",
        D / "ambersafe/data/sft-train.parquet",
        "--model",
        D / "base_model",
        "--batch-size",
        "8",
        "--gradient-accumulation-steps",
        "2",
        "--n-epochs",
        "1",
        "--max-steps",
        "60",
        "--checkpoint-every",
        "4",
        "--max-length",
        "128",
        "--max-prompt-length",
        "64",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "3",
        "--deterministic",
        "--out-dir",
        out / "model",
        "--state-dir",
        out / "state",
        *extra,
    ]


def same(a, b):
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model/model.safetensors"), load_file(b / "model/model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


print("== 1. process group: cpu:gloo,cuda:nccl, CPU and CUDA collectives", flush=True)
run([sys.executable, "-c", NCCL_CHECK])

print("== 2. SFT on the GPU: uninterrupted vs Ctrl-C + resume (deterministic)", flush=True)
a, b = SCRATCH / "a", SCRATCH / "b"
run(sft(a))
p = subprocess.Popen(sft(b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
while not (b / "state/checkpoint/manifest.json").exists() and p.poll() is None:
    time.sleep(0.005)
p.send_signal(signal.SIGINT)
out, err = p.communicate(timeout=300)
print(
    "interrupted rc",
    p.returncode,
    [line for line in err.splitlines() if "SIGINT" in line or "error" in line],
)
r = run(sft(b))
print("resumed line:", [line for line in r.stdout.splitlines() if "resuming" in line])
print("BITWISE SAME AFTER CTRL-C RESUME ON GPU:", same(a, b), flush=True)
# damage the kept checkpoint's shard and resume: falls back / starts afresh, same final weights
c = SCRATCH / "c"
p = subprocess.Popen(sft(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
while not (c / "state/checkpoint.old/manifest.json").exists() and p.poll() is None:
    time.sleep(0.005)
p.send_signal(signal.SIGKILL)
p.wait()
shard = next((c / "state/checkpoint").glob("*.distcp"))
data = bytearray(shard.read_bytes())
data[len(data) // 2] ^= 0xFF
shard.write_bytes(bytes(data))
r = run(sft(c))
print([line for line in r.stdout.splitlines() if "resum" in line or "afresh" in line])
print("BITWISE SAME AFTER DAMAGED-SHARD FALLBACK ON GPU:", same(a, c), flush=True)

print("== 3. ref-logps (float16, token budget) and DPO (bf16) on the GPU", flush=True)
refs = {split: SCRATCH / "r" / f"{split}.parquet" for split in ("train", "test")}
pairs = {split: D / f"ambersafe/data/pairs-{split}.parquet" for split in ("train", "test")}
for split in ("train", "test"):
    run([sys.executable, "-m", "amber_repro", "ref-logps", "--model", D / "base_model",
         "--pairs", pairs[split], "--out", refs[split], "--max-length", "128",
         "--max-prompt-length", "64", "--precision", "float16"])  # fmt: skip
dpo_dir = SCRATCH / "dpo"
run([sys.executable, "-m", "amber_repro", "dpo", "--model", D / "base_model",
     "--pairs", pairs["train"], "--ref-logps", refs["train"], "--eval-pairs", pairs["test"],
     "--eval-ref-logps", refs["test"], "--out-dir", dpo_dir / "model",
     "--state-dir", dpo_dir / "state", "--batch-size", "8", "--gradient-accumulation-steps", "2",
     "--max-steps", "40", "--eval-every", "160", "--eval-examples", "64", "--max-length", "128",
     "--max-prompt-length", "64", "--precision", "bf16", "--lr", "1e-4", "--warmup-steps", "5",
     "--checkpoint-every", "10"])  # fmt: skip
rec = json.loads((dpo_dir / "model/amber_repro.json").read_text())
print("dpo results", rec["results"], "speed", rec["speed"], flush=True)

print("== 4. log-prob memory at vocabulary 32,000 (CUDA peak)", flush=True)
run(
    [
        sys.executable,
        "bench/logps_memory.py",
        "--device",
        "cuda",
        "--variants",
        "plain",
        "module",
        "--sequences",
        "64",
        "--length",
        "512",
    ],
    timeout=240,
)

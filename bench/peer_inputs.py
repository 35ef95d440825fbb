"""The peer benchmark's inputs (bench/peer_trl_dpo.py): the embedded pipeline's SFT model and pairs
(built if absent), the 20M model, and the work both sides do, tokenized our way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BETAS = (0.05, 0.1, 0.2, 0.5)
SFT = "results/ambersafe/sft"
DATA = "results/ambersafe/data"
# The 20M model: LlamaConfig sizes (about 20M parameters with a 1024-token vocabulary).
LLAMA_20M = {
    "hidden_size": 512,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 1376,
    "max_position_embeddings": 512,
}
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass
class Work:
    """What both sides do in one configuration."""

    name: str
    model: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    max_grad_norm: float
    beta: float
    loss: str
    max_length: int
    max_prompt_length: int
    reference_batch_size: int
    eval_batch_size: int
    seed: int
    n_train: int = 0
    n_test: int = 0
    train_tokens: int = 0  # non-padding tokens of the training batches (chosen + rejected)
    digests: dict = field(default_factory=dict)


def child_env(repo: Path) -> dict:
    """The environment of every child: offline, PYTHONPATH=<repo>, the venv's bin first on PATH."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def ensure_pipeline(pipeline: Path, repo: Path) -> None:
    wanted = [
        *(f"{SFT}/{name}" for name in MODEL_FILES),
        f"{DATA}/pairs-train.parquet",
        f"{DATA}/pairs-test.parquet",
    ]
    # The settings both sides run with come from this copy: always the checkout's own (an older
    # copy would bench older settings on the SFT model and pairs built before).
    pipeline.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "config", pipeline / "config", dirs_exist_ok=True)
    if all((pipeline / path).exists() for path in wanted):
        return
    print(f"building the embedded pipeline's SFT model and pairs in {pipeline} ...", flush=True)
    targets = [SFT, f"{DATA}/pairs-train.parquet", f"{DATA}/pairs-test.parquet"]
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "-d", str(pipeline)]
    command += ["--snakefile", str(repo / "Snakefile"), *targets]
    log = pipeline / "bench-build.log"
    with log.open("w") as handle:
        done = subprocess.run(
            command, cwd=pipeline, env=child_env(repo), stdout=handle, stderr=subprocess.STDOUT
        )
    if done.returncode:
        sys.exit(f"building the pipeline failed ({log}):\n{log.read_text()[-3000:]}")


def build_20m(tokenizer_dir: Path, out: Path) -> Path:
    """A freshly initialised ~20M-parameter LLaMA with the embedded tokenizer (built once)."""
    if all((out / name).exists() for name in MODEL_FILES):
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **LLAMA_20M,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"built {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    return out


def pair_triples(tokenized: list[dict]) -> list[list[list[int]]]:
    """Our tokenized pairs as [prompt ids, chosen response ids, rejected response ids]."""
    from amber_repro.data.tokenization import IGNORE_INDEX

    triples = []
    for pair in tokenized:
        chosen, rejected = pair["chosen"], pair["rejected"]
        n = sum(1 for label in chosen["labels"] if label == IGNORE_INDEX)
        triples.append(
            [chosen["input_ids"][:n], chosen["input_ids"][n:], rejected["input_ids"][n:]]
        )
    return triples


def digest(triples) -> str:
    return hashlib.sha256(json.dumps(triples, separators=(",", ":")).encode()).hexdigest()


def batch_order(n_examples: int, batch_size: int, seed: int, steps: int) -> list[int]:
    """Our DPO's training order (training.global_batches, epoch 0) for `steps` full batches."""
    import torch

    per_epoch = n_examples // batch_size
    if steps > per_epoch:
        sys.exit(f"{steps} steps need more than one epoch ({per_epoch} batches); use fewer steps")
    order = torch.randperm(
        n_examples, generator=torch.Generator().manual_seed(seed * 1_000_003)
    ).tolist()
    return order[: steps * batch_size]


def describe_work(name: str, model: Path, steps: int, pipeline: Path) -> Work:
    """The work of a config: the pipeline's settings, 8 pairs a step; tokens counted our way."""
    import polars as pl
    import yaml

    from amber_repro.config.load import resolve
    from amber_repro.data.tokenization import Limits
    from amber_repro.training.pairs import tokenize_pairs
    from amber_repro.training.runtime import load_tokenizer

    config = resolve(
        yaml.safe_load((pipeline / "config/config.yaml").read_text()) or {},
        pipeline / "config/presets",
    )
    work = Work(
        name=name,
        model=str(model),
        steps=steps,
        batch_size=8,
        lr=config.dpo.lr,
        warmup_steps=config.dpo.warmup_steps,
        max_grad_norm=config.dpo.max_grad_norm,
        beta=config.dpo.beta,
        loss=config.dpo.loss,
        max_length=config.tokenization.max_length,
        max_prompt_length=config.tokenization.max_prompt_length,
        reference_batch_size=config.reference.batch_size,
        eval_batch_size=config.dpo.eval_batch_size,
        seed=config.dpo.seed,
    )
    tokenizer = load_tokenizer(model)
    limits = Limits(work.max_length, work.max_prompt_length)
    for split in ("train", "test"):
        frame = pl.read_parquet(pipeline / DATA / f"pairs-{split}.parquet")
        tokenized = tokenize_pairs(tokenizer, frame, limits)
        setattr(work, f"n_{split}", len(tokenized))
        work.digests[split] = digest(pair_triples(tokenized))
        if split == "train":
            order = batch_order(len(tokenized), work.batch_size, work.seed, steps)
            work.train_tokens = sum(
                len(tokenized[i]["chosen"]["input_ids"])
                + len(tokenized[i]["rejected"]["input_ids"])
                for i in order
            )
    return work

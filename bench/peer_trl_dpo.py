"""Peer benchmark: our DPO stage against TRL's DPOTrainer doing the same work.

    make bench                      # installs the `bench` extra (TRL), runs the defaults
    python bench/peer_trl_dpo.py [--configs embedded:100,20m:50] [--repeats 3] [--sweep]
        [--pipeline DIR] [--repo PATH] [--workdir DIR] [--out FILE.json]

TRL (pyproject's `bench` extra) is not in requirements.lock and stays out of .venv, which tests
check to be exactly the lock: `make bench` installs it into .venv-bench, an environment that sees
.venv's packages, and runs this script with that environment's python.

What runs. Each measurement is a FRESH process (whole wall time, startup and imports included),
ours and TRL alternating (ABBA order over the repeats); the table gives medians of wall time, of
CPU time (user + system, from os.wait4: less sensitive to other load on a shared machine) and of
peak RSS, and the JSON (--out) every run, with the load average at each start and end.
- Ours, as the workflow runs it (rules/ref_logps.smk, rules/dpo.smk): `python -m amber_repro
  ref-logps` on pairs-train, again on pairs-test, then `python -m amber_repro dpo`, with the flags
  the workflow derives from the pipeline's config (reference, dpo, tokenization, reproducibility
  sections) except --batch-size 8, --gradient-accumulation-steps 1, --max-steps, --eval-every and
  --checkpoint-every past the last step, and --eval-examples the held-out split's size; our time
  is the sum of the three processes, our peak RSS the largest of them.
- TRL: one process (`--trl-child`, below): tokenization, `precompute_ref_log_probs` for the train
  and held-out pairs, training, one held-out evaluation, `save_model`.
Both: the same SFT model, the same pairs (train and held-out), sigmoid loss, beta from the config
(0.1), float32, 8 pairs per optimizer step with no accumulation, --steps optimizer steps, the
batches in the same order (our seeded per-epoch shuffle; TRL gets it as its train sampler),
torch.optim.RMSprop(lr) with our schedule (linear warmup from (step + 1) / (warmup + 1), then
constant) passed to TRL as `optimizers=`, the same max_grad_norm, max_length 128 with max prompt
length 64, reference batch 32, eval batch 32, the whole held-out split evaluated at the end, no
evaluation or checkpoint during training, and for TRL no reporting to files (report_to none).

Configs: `embedded` is the embedded pipeline's own SFT model (the tiny LLaMA); `20m` is a freshly
initialised ~20M-parameter LlamaForCausalLM (hidden 512, 6 layers, 8 heads, intermediate 1376, the
embedded tokenizer's vocabulary), saved with save_pretrained next to the tokenizer and used as the
"SFT model" without training. `--sweep` compares our beta sweep (reference log-probs once, then
four DPO trainings at beta 0.05/0.1/0.2/0.5) with four separate TRL runs (each recomputing them).

Inputs: --pipeline DIR holds results/ of an embedded run (tokenizer and SFT model in
results/ambersafe/sft, results/ambersafe/data/pairs-{train,test}.parquet). If they are absent the
bench copies <repo>/config there and builds just those targets with `python -m snakemake --cores 2
-d DIR --snakefile <repo>/Snakefile`. --repo PATH runs our stage from another checkout (e.g.
`git worktree add /tmp/amber-before HEAD`): its children get PYTHONPATH=<repo> and start in the
pipeline folder, so `python -m amber_repro` imports <repo>/amber_repro (checked and recorded).

Same work, verified: the bench tokenizes the pairs with our tokenization (amber_repro.tokenization)
and the TRL child reports a digest of the token ids TRL trains and evaluates on, and the number of
non-padding tokens its training batches held; the table's "same tokens" column says whether both
match ours. TRL 1.x has no max_prompt_length and truncates prompt + completion to max_length from
the start; our keep-start rule (prompt cut to max_prompt_length first, then the responses to
max_length - max_prompt_length) is applied to TRL's own token ids by a `_prepare_dataset` override,
with TRL's prompt-only-too-long filter disabled (ours keeps those pairs). On the embedded data this
changes 10 of 2092 training pairs. TRL tokenizes prompt + completion jointly with the tokenizer's
special tokens and appends the EOS text to each completion; ours tokenizes the parts separately
without special tokens and appends the EOS id. With the embedded tokenizer (adds no BOS, no merges
across the boundary) the ids are identical; a LLaMA tokenizer would give TRL a BOS ours lacks.

Differences that remain (the table measures them; they are not removed):
- Ours runs three processes (three startups, three model loads) where TRL runs one, and writes its
  reference log-probs to parquet with a JSON record (hashing model and pairs) that DPO reads back.
- Ours evaluates the held-out pairs twice at the end (the in-loop evaluation at the last step and
  the final one); TRL once.
- Ours logs every step to metrics.jsonl and TensorBoard and writes a model card and a record with
  the inputs' sha256; TRL keeps its metrics in memory (logging_strategy "no").
- Ours computes log-probs from full float32 logits (log_softmax over the vocabulary) and leaves
  use_cache at the config's True (each forward builds a KV cache); TRL uses its fused LM head
  (tiled log-probs, no full log-softmax) with use_cache=False, and computes extra metrics (entropy,
  token accuracy, mean logits).
- TRL's optimizer sees the same parameters and settings, but goes through accelerate's wrappers and
  the Trainer's loop (gradient clipping via accelerate, its own dataloader and collator).
Measured on CPU (both sides would take cuda:0 where one is visible; not tried). The machine may
be shared: rerun, and compare only figures from one session and one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


# --- inputs ---------------------------------------------------------------------------------------


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
    if all((pipeline / path).exists() for path in wanted):
        return
    print(f"building the embedded pipeline's SFT model and pairs in {pipeline} ...", flush=True)
    pipeline.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "config", pipeline / "config", dirs_exist_ok=True)
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
    from amber_repro.tokenization import IGNORE_INDEX

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

    from amber_repro import training as T
    from amber_repro.configuration import resolve
    from amber_repro.pairs import tokenize_pairs
    from amber_repro.tokenization import Limits

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
    tokenizer = T.load_tokenizer(model)
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


# --- running children -----------------------------------------------------------------------------


def run_child(command: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run one process to the end: its wall time, and from os.wait4's rusage its own CPU time
    (user + system, less sensitive than wall time to other load on the machine) and peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    with log.open("w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=handle)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"failed ({process.returncode}): {' '.join(command)}\n{log.read_text()[-4000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "load_average_1min": [load, os.getloadavg()[0]],  # at start and end
    }


def flags(settings, only=None) -> list[str]:
    import shlex

    from amber_repro.configuration import settings_flags

    return shlex.split(settings_flags(settings, only))


def our_flags(work: Work, pipeline: Path) -> tuple[list[str], list[str]]:
    """ref-logps and dpo flags as the workflow derives them, with the bench's batch and steps."""
    import yaml

    from amber_repro.configuration import resolve

    config = resolve(
        yaml.safe_load((pipeline / "config/config.yaml").read_text()) or {},
        pipeline / "config/presets",
    )
    common = flags(config.tokenization) + flags(config.reproducibility)
    dpo = config.dpo.model_copy(
        update={
            "batch_size": work.batch_size,
            "gradient_accumulation_steps": 1,
            "checkpoint_every": work.steps + 1,  # none during the run
            "eval_every": work.steps + 1,  # only the final evaluations
            "eval_examples": work.n_test,  # the whole held-out split, as TRL evaluates it
        }
    )
    return flags(config.reference) + common, flags(dpo) + common


def run_ours(work: Work, betas, repo: Path, pipeline: Path, scratch: Path) -> dict:
    """Reference log-probs of train and test, then one DPO per beta: each a fresh process."""
    env = child_env(repo)
    ref_flags, dpo_flags = our_flags(work, pipeline)
    python = [sys.executable, "-m", "amber_repro"]
    data, ref = pipeline / DATA, scratch / "ref_logps"
    processes = {}
    for split in ("train", "test"):
        command = [*python, "ref-logps", "--model", work.model]
        command += ["--pairs", str(data / f"pairs-{split}.parquet")]
        command += ["--out", str(ref / f"{split}.parquet"), *ref_flags]
        processes[f"ref-logps {split}"] = run_child(
            command, pipeline, env, scratch / f"ref_logps-{split}.log"
        )
    speeds = {}
    for beta in betas:
        out = scratch / f"dpo-beta{beta}"
        command = [*python, "dpo", "--model", work.model]
        command += ["--pairs", str(data / "pairs-train.parquet")]
        command += ["--ref-logps", str(ref / "train.parquet")]
        command += ["--eval-pairs", str(data / "pairs-test.parquet")]
        command += ["--eval-ref-logps", str(ref / "test.parquet")]
        command += ["--out-dir", str(out), "--state-dir", str(scratch / f"state-beta{beta}")]
        command += ["--max-steps", str(work.steps), *dpo_flags, "--beta", str(beta)]
        log = scratch / f"dpo-beta{beta}.log"
        processes[f"dpo beta {beta}"] = run_child(command, pipeline, env, log)
        record = json.loads((out / "amber_repro.json").read_text())
        speeds[str(beta)] = {"speed": record["speed"], "results": record["results"]}
    return {
        "wall_s": sum(p["wall_s"] for p in processes.values()),
        "cpu_s": sum(p["cpu_s"] for p in processes.values()),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in processes.values()),
        "processes": processes,
        "dpo": speeds,
    }


def run_trl(work: Work, beta: float, repo: Path, pipeline: Path, scratch: Path) -> dict:
    """One TRL DPOTrainer run, in a fresh process (this script's --trl-child)."""
    scratch.mkdir(parents=True, exist_ok=True)
    spec = {
        **asdict(work),
        "beta": beta,
        "pairs_train": str(pipeline / DATA / "pairs-train.parquet"),
        "pairs_test": str(pipeline / DATA / "pairs-test.parquet"),
        "order": batch_order(work.n_train, work.batch_size, work.seed, work.steps),
        "out_dir": str(scratch / "model"),
        "result": str(scratch / "result.json"),
    }
    (scratch / "spec.json").write_text(json.dumps(spec))
    # Its own datasets cache: nothing (reference log-probs included) is reused from another run.
    env = {**child_env(repo), "HF_DATASETS_CACHE": str(scratch / "hf_datasets")}
    command = [sys.executable, str(Path(__file__).resolve()), "--trl-child", str(scratch)]
    measured = run_child(command, pipeline, env, scratch / "trl.log")
    return {**measured, **json.loads((scratch / "result.json").read_text())}


# --- the TRL side (a child process) ---------------------------------------------------------------


def trl_child(scratch: Path) -> None:
    import datasets
    import polars as pl
    import torch
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    clock = [("start", time.perf_counter(), time.process_time())]  # (phase ended, wall, CPU)

    def lap(phase):
        clock.append((phase, time.perf_counter(), time.process_time()))

    spec = json.loads((scratch / "spec.json").read_text())
    max_length, max_prompt = spec["max_length"], spec["max_prompt_length"]

    def keep_start(example):
        """Our truncation (amber_repro.tokenization.truncate) on TRL's token ids."""
        prompt, chosen, rejected = (
            example["prompt_ids"],
            example["chosen_ids"],
            example["rejected_ids"],
        )
        longer = max(len(chosen), len(rejected))
        if len(prompt) + longer > max_length:
            prompt = prompt[:max_prompt]
        if len(prompt) + longer > max_length:
            cut = max_length - max_prompt
            chosen, rejected = chosen[:cut], rejected[:cut]
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}

    class PeerDPOTrainer(DPOTrainer):
        """DPOTrainer with our truncation, our batch order, and a count of training tokens."""

        train_tokens = 0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            max_length, args.max_length = args.max_length, None  # no prompt-only filter
            try:
                dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            finally:
                args.max_length = max_length
            return dataset.map(keep_start)

        def _get_train_sampler(self, train_dataset=None):
            return spec["order"]

        def training_step(self, model, inputs, *args, **kwargs):
            self.train_tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    def load(path):
        columns = pl.read_parquet(path).select("prompt", "chosen", "rejected")
        return datasets.Dataset.from_dict(columns.to_dict(as_series=False))  # in memory

    tokenizer = AutoTokenizer.from_pretrained(spec["model"], local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # as ours (training.load_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], local_files_only=True, use_safetensors=True, dtype=torch.float32
    )
    optimizer = torch.optim.RMSprop(model.parameters(), lr=spec["lr"])
    warmup = spec["warmup_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1))
    )
    args = DPOConfig(
        output_dir=str(scratch / "trainer"),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        per_device_eval_batch_size=spec["eval_batch_size"],
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=spec["reference_batch_size"],
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        max_grad_norm=spec["max_grad_norm"],
        beta=spec["beta"],
        loss_type=[spec["loss"]],
        max_length=max_length,
        truncation_mode="keep_start",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=spec["seed"],
        dataloader_num_workers=0,
    )
    trainer = PeerDPOTrainer(
        model=model,
        args=args,
        train_dataset=load(spec["pairs_train"]),
        eval_dataset=load(spec["pairs_test"]),
        processing_class=tokenizer,
        optimizers=(optimizer, scheduler),
    )
    lap("setup_and_reference")
    train_metrics = trainer.train().metrics
    lap("train")
    eval_metrics = trainer.evaluate()
    lap("eval")
    trainer.save_model(spec["out_dir"])
    lap("save")

    def triples(dataset):
        columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_dict()
        return [list(t) for t in zip(*columns.values(), strict=True)]

    result = {
        "steps_done": trainer.state.global_step,
        "train_tokens": trainer.train_tokens,
        "train_runtime_s": train_metrics["train_runtime"],
        "phases_s": {c[0]: c[1] - b[1] for b, c in itertools.pairwise(clock)},
        "phases_cpu_s": {c[0]: c[2] - b[2] for b, c in itertools.pairwise(clock)},
        "torch_threads": torch.get_num_threads(),
        "activation_checkpointing": bool(trainer.args.activation_checkpointing),
        "eval": {k: v for k, v in eval_metrics.items() if isinstance(v, int | float)},
        "n_train": len(trainer.train_dataset),
        "n_test": len(trainer.eval_dataset),
        "digests": {
            "train": digest(triples(trainer.train_dataset)),
            "test": digest(triples(trainer.eval_dataset)),
        },
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
        },
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=1))


# --- reporting ------------------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else float("nan")


def same_tokens(work: Work, trl_runs: list[dict]) -> bool:
    return all(
        run["digests"] == work.digests
        and run["train_tokens"] == work.train_tokens
        and run["steps_done"] == work.steps
        for run in trl_runs
    )


def summarize(work: Work, runs: list[dict]) -> dict:
    ours = [r["ours"] for r in runs]
    trl_runs = [r["trl"] for r in runs]
    our_wall = median([r["wall_s"] for r in ours])
    trl_wall = median([r["wall_s"] for r in trl_runs])
    our_cpu = median([r["cpu_s"] for r in ours])
    trl_cpu = median([r["cpu_s"] for r in trl_runs])
    beta = str(work.beta)
    return {
        "our_wall_s": our_wall,
        "trl_wall_s": trl_wall,
        "trl_over_ours": trl_wall / our_wall,
        "trl_over_ours_per_repeat": [
            t["wall_s"] / o["wall_s"] for o, t in zip(ours, trl_runs, strict=True)
        ],
        "our_cpu_s": our_cpu,
        "trl_cpu_s": trl_cpu,
        "trl_over_ours_cpu": trl_cpu / our_cpu,
        "our_tokens_per_s": work.train_tokens / our_wall,
        "trl_tokens_per_s": work.train_tokens / trl_wall,
        "our_loop_tokens_per_s": median(
            [r["dpo"][beta]["speed"]["tokens_per_second"] for r in ours]
        ),
        "trl_loop_tokens_per_s": median(
            [work.train_tokens / r["train_runtime_s"] for r in trl_runs]
        ),
        "our_peak_rss_mib": median([r["peak_rss_bytes"] for r in ours]) / 2**20,
        "trl_peak_rss_mib": median([r["peak_rss_bytes"] for r in trl_runs]) / 2**20,
        "our_processes_s": {
            name: median([r["processes"][name]["wall_s"] for r in ours])
            for name in ours[0]["processes"]
        },
        "our_processes_cpu_s": {
            name: median([r["processes"][name]["cpu_s"] for r in ours])
            for name in ours[0]["processes"]
        },
        "trl_phases_s": {
            name: median([r["phases_s"][name] for r in trl_runs])
            for name in trl_runs[0]["phases_s"]
        },
        "trl_phases_cpu_s": {
            name: median([r["phases_cpu_s"][name] for r in trl_runs])
            for name in trl_runs[0]["phases_cpu_s"]
        },
        "our_tokens_match": all(
            r["dpo"][beta]["speed"]["tokens"] == work.train_tokens for r in ours
        ),
        "trl_same_tokens": same_tokens(work, trl_runs),
        "our_eval_loss": median([r["dpo"][beta]["results"]["eval/loss"] for r in ours]),
        "trl_eval_loss": median([r["eval"]["eval_loss"] for r in trl_runs]),
    }


def table(rows: list[tuple[Work, dict]], repeats: int) -> str:
    head = (
        f"{'config':<9} {'steps':>5} {'ours s':>7} {'TRL s':>7} {'TRL/ours':>8} {'CPU T/o':>7} "
        f"{'ours tok/s':>10} {'TRL tok/s':>9} {'ours RSS':>9} {'TRL RSS':>9} {'same tokens':>11}"
    )
    lines = [
        f"medians of {repeats} run(s) each; TRL/ours = wall-time ratio (> 1: ours is faster), "
        "CPU T/o = the same for CPU seconds; tok/s = training tokens / whole wall time",
        head,
    ]
    for work, s in rows:
        same = "yes" if s["trl_same_tokens"] and s["our_tokens_match"] else "NO"
        lines.append(
            f"{work.name:<9} {work.steps:>5} {s['our_wall_s']:>7.1f} {s['trl_wall_s']:>7.1f} "
            f"{s['trl_over_ours']:>7.2f}x {s['trl_over_ours_cpu']:>6.2f}x "
            f"{s['our_tokens_per_s']:>10.0f} {s['trl_tokens_per_s']:>9.0f} "
            f"{s['our_peak_rss_mib']:>5.0f} MiB {s['trl_peak_rss_mib']:>5.0f} MiB {same:>11}"
        )
    for work, s in rows:
        ours = ", ".join(
            f"{k} {v:.1f}/{s['our_processes_cpu_s'][k]:.1f}"
            for k, v in s["our_processes_s"].items()
        )
        trl_phases = ", ".join(
            f"{k} {v:.1f}/{s['trl_phases_cpu_s'][k]:.1f}" for k, v in s["trl_phases_s"].items()
        )
        ratios = ", ".join(f"{r:.2f}" for r in s["trl_over_ours_per_repeat"])
        lines += [
            f"{work.name}: {work.train_tokens} training tokens; TRL/ours per repeat {ratios}; "
            f"CPU s ours {s['our_cpu_s']:.1f}, TRL {s['trl_cpu_s']:.1f}",
            f"  ours [wall/CPU s]: {ours}",
            f"  TRL in its process [wall/CPU s]: {trl_phases}",
            f"  training-loop tok/s ours {s['our_loop_tokens_per_s']:.0f}, TRL "
            f"{s['trl_loop_tokens_per_s']:.0f}; held-out loss ours {s['our_eval_loss']:.4f}, TRL "
            f"{s['trl_eval_loss']:.4f}",
        ]
    return "\n".join(lines)


def sweep_table(work: Work, runs: list[dict]) -> tuple[str, dict]:
    ours = median([r["ours"]["wall_s"] for r in runs])
    trl_total = median([sum(t["wall_s"] for t in r["trl"].values()) for r in runs])
    our_cpu = median([r["ours"]["cpu_s"] for r in runs])
    trl_cpu = median([sum(t["cpu_s"] for t in r["trl"].values()) for r in runs])
    summary = {
        "our_wall_s": ours,
        "trl_wall_s": trl_total,
        "trl_over_ours": trl_total / ours,
        "trl_over_ours_per_repeat": [
            sum(t["wall_s"] for t in r["trl"].values()) / r["ours"]["wall_s"] for r in runs
        ],
        "our_cpu_s": our_cpu,
        "trl_cpu_s": trl_cpu,
        "trl_over_ours_cpu": trl_cpu / our_cpu,
        "our_processes_s": {
            name: median([r["ours"]["processes"][name]["wall_s"] for r in runs])
            for name in runs[0]["ours"]["processes"]
        },
        "trl_runs_s": {
            beta: median([r["trl"][beta]["wall_s"] for r in runs]) for beta in runs[0]["trl"]
        },
        "trl_same_tokens": same_tokens(work, [t for r in runs for t in r["trl"].values()]),
    }
    ratios = ", ".join(f"{r:.2f}" for r in summary["trl_over_ours_per_repeat"])
    text = (
        f"sweep ({work.name}, {work.steps} steps, beta {'/'.join(map(str, BETAS))}), medians of "
        f"{len(runs)} run(s): ours {ours:.1f} s (reference once + 4 DPO), TRL {trl_total:.1f} s "
        f"(4 runs), TRL/ours {summary['trl_over_ours']:.2f}x (per repeat {ratios}); CPU s ours "
        f"{our_cpu:.1f}, TRL {trl_cpu:.1f} ({summary['trl_over_ours_cpu']:.2f}x); same tokens: "
        f"{'yes' if summary['trl_same_tokens'] else 'NO'}\n  ours [s]: "
        + ", ".join(f"{k} {v:.1f}" for k, v in summary["our_processes_s"].items())
        + "\n  TRL [s]: "
        + ", ".join(f"beta {k} {v:.1f}" for k, v in summary["trl_runs_s"].items())
    )
    return text, summary


# --- main -----------------------------------------------------------------------------------------


def parse_configs(text: str) -> list[tuple[str, int]]:
    configs = []
    for part in filter(None, text.split(",")):
        name, _, steps = part.partition(":")
        if name not in ("embedded", "20m"):
            raise argparse.ArgumentTypeError(f"unknown config {name!r} (embedded, 20m)")
        configs.append((name, int(steps or {"embedded": 100, "20m": 50}[name])))
    return configs


def import_check(repo: Path, cwd: Path) -> str:
    """Where `python -m amber_repro` children import amber_repro from; must be <repo>."""
    done = subprocess.run(
        [sys.executable, "-c", "import amber_repro; print(amber_repro.__file__)"],
        cwd=cwd,
        env=child_env(repo),
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(done.stdout.strip()).resolve()
    if not path.is_relative_to(repo.resolve()):
        sys.exit(f"children import amber_repro from {path}, not from --repo {repo}")
    return str(path)


def git_state(repo: Path) -> dict:
    def git(*args):
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_workdir = Path(tempfile.gettempdir()) / "amber-bench"
    parser.add_argument(
        "--configs",
        type=parse_configs,
        default=parse_configs("embedded:100,20m:50"),
        help="comma-separated NAME[:STEPS], NAME embedded or 20m (default: embedded:100,20m:50)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (default: 3)")
    parser.add_argument(
        "--sweep", action="store_true", help="the beta sweep instead (first config of --configs)"
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout our stage runs from")
    parser.add_argument(
        "--workdir", type=Path, default=default_workdir, help=f"scratch (default {default_workdir})"
    )
    parser.add_argument(
        "--pipeline", type=Path, help="an embedded run's folder (default: WORKDIR/pipeline)"
    )
    parser.add_argument("--out", type=Path, help="the JSON (default: WORKDIR/peer_trl_dpo.json)")
    parser.add_argument("--keep", action="store_true", help="keep each run's outputs")
    parser.add_argument("--trl-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        trl_child(args.trl_child)
        return

    repo, workdir = args.repo.resolve(), args.workdir.resolve()
    pipeline = (args.pipeline or workdir / "pipeline").resolve()
    out = args.out or workdir / "peer_trl_dpo.json"
    ensure_pipeline(pipeline, repo)
    imported = import_check(repo, pipeline)
    print(f"our stage: amber_repro from {imported}", flush=True)
    models = {"embedded": pipeline / SFT}
    if any(name == "20m" for name, _ in args.configs):
        models["20m"] = build_20m(pipeline / SFT, workdir / "models" / "llama-20m")
    import trl

    record = {
        "meta": {
            "argv": sys.argv,
            "repo": str(repo),
            "repo_git": git_state(repo),
            "amber_repro_imported_from": imported,
            "pipeline": str(pipeline),
            "trl": trl.__version__,
            "python": platform.python_version(),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "configs": [],
    }
    configs = args.configs[:1] if args.sweep else args.configs
    rows = []
    for name, steps in configs:
        work = describe_work(name, models[name], steps, pipeline)
        runs = []
        for repeat in range(args.repeats):
            scratch = workdir / "runs" / f"{name}-{repeat}"
            shutil.rmtree(scratch, ignore_errors=True)
            sides = ["ours", "trl"] if repeat % 2 == 0 else ["trl", "ours"]  # ABBA
            run = {"repeat": repeat, "order": sides, "load_average": os.getloadavg()}
            for side in sides:
                if side == "ours":
                    betas = BETAS if args.sweep else (work.beta,)
                    run["ours"] = run_ours(work, betas, repo, pipeline, scratch / "ours")
                elif args.sweep:
                    run["trl"] = {
                        str(beta): run_trl(work, beta, repo, pipeline, scratch / f"trl-{beta}")
                        for beta in BETAS
                    }
                else:
                    run["trl"] = run_trl(work, work.beta, repo, pipeline, scratch / "trl")
                wall = (
                    sum(t["wall_s"] for t in run["trl"].values())
                    if side == "trl" and args.sweep
                    else run[side]["wall_s"]
                )
                print(f"{name} run {repeat + 1}/{args.repeats}: {side} {wall:.1f} s", flush=True)
            runs.append(run)
            if not args.keep:
                shutil.rmtree(scratch, ignore_errors=True)
        if args.sweep:
            text, summary = sweep_table(work, runs)
            print(text)
        else:
            summary = summarize(work, runs)
            rows.append((work, summary))
        record["configs"].append(
            {"work": asdict(work), "runs": runs, "summary": summary, "sweep": args.sweep}
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
    if rows:
        text = table(rows, args.repeats)
        print(text)
    record["table"] = text
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

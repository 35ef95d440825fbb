"""Peer benchmark: our DPO stage against TRL's DPOTrainer doing the same work.

    make bench                      # installs the `bench` extra (TRL), runs the defaults
    python bench/peer_trl_dpo.py [--configs embedded:100,20m:50] [--repeats 3] [--sweep [--jobs N]]
        [--pipeline DIR] [--repo PATH] [--workdir DIR] [--out FILE.json]

TRL (pyproject's `bench` extra) is not in requirements.lock and stays out of .venv, which tests
check to be exactly the lock: `make bench` installs it into .venv-bench, an environment that sees
.venv's packages, and runs this script with that environment's python.

What runs. Each measurement is a FRESH process (whole wall time, startup and imports included),
ours and TRL alternating (ABBA order over the repeats); the table gives medians of wall time, of
CPU time (user + system, from os.wait4: less sensitive to other load on a shared machine) and of
peak RSS, and the JSON (--out) every run, with the load average at each start and end.
- Ours, as the workflow runs it (rules/ref_logps.smk, rules/dpo.smk): `python -m amber_repro
  ref-logps` on pairs-train and pairs-test (one process), then `python -m amber_repro dpo`, with
  the flags the workflow derives from the pipeline's config (reference, dpo, tokenization,
  reproducibility sections) except --batch-size 8, --gradient-accumulation-steps 1, --max-steps,
  --eval-every and --checkpoint-every past the last step, and --eval-examples the held-out split's
  size; our time is the sum of the two processes, our peak RSS the larger of them.
- TRL: one process (`--trl-child`, peer_trl_child.py): tokenization, `precompute_ref_log_probs`
  for the train and held-out pairs, training, one held-out evaluation, `save_model`.
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
With --jobs N (default 1) both sides run N processes at a time: after our one ref-logps process
(alone, all CPUs), our four DPO processes, and TRL's four runs, each process with OMP_NUM_THREADS
and MKL_NUM_THREADS max(1, CPUs // N), as Snakemake gives a job its threads (`--cores 2` with
1-thread DPO jobs runs two at once). A side's time is then the wall time from its first start to
its last end, its CPU time the sum over its processes; the JSON and the table give N and each
process's times.

Code: peer_inputs.py (the work and its inputs), peer_runs.py (running both sides),
peer_trl_child.py (the TRL side, in its own process), peer_report.py (summaries and tables).

Inputs: --pipeline DIR holds results/ of an embedded run (tokenizer and SFT model in
results/ambersafe/sft, results/ambersafe/data/pairs-{train,test}.parquet). If they are absent the
bench copies <repo>/config there and builds just those targets with `python -m snakemake --cores 2
-d DIR --snakefile <repo>/Snakefile`. --repo PATH runs our stage from another checkout (e.g.
`git worktree add /tmp/amber-before HEAD`): its children get PYTHONPATH=<repo> and start in the
pipeline folder, so `python -m amber_repro` imports <repo>/amber_repro (checked and recorded).

Same work, verified: the bench tokenizes the pairs with our tokenization
(amber_repro.data.tokenization) and the TRL child reports a digest of the token ids TRL trains and
evaluates on, and the number of non-padding tokens its training batches held; the table's "same
tokens" column says whether both match ours. TRL 1.x has no max_prompt_length and truncates prompt +
completion to max_length from the start; our keep-start rule (prompt cut to max_prompt_length first,
then the responses to max_length - max_prompt_length) is applied to TRL's own token ids by a
`_prepare_dataset` override, with TRL's prompt-only-too-long filter disabled (ours keeps those
pairs). On the embedded data this changes 10 of 2092 training pairs. TRL tokenizes prompt +
completion jointly with the tokenizer's special tokens and appends the EOS text to each completion;
ours tokenizes the parts separately without special tokens and appends the EOS id. With the embedded
tokenizer (adds no BOS, no merges across the boundary) the ids are identical; a LLaMA tokenizer
would give TRL a BOS ours lacks.

Differences that remain (the table measures them; they are not removed):
- Ours runs two processes (two startups, two model loads) where TRL runs one, and writes its
  reference log-probs to parquet with a JSON record (hashing model and pairs) that DPO reads back.
- Ours logs every step to metrics.jsonl and TensorBoard and writes a model card and a record with
  the inputs' sha256; TRL keeps its metrics in memory (logging_strategy "no").
- Ours computes log-probs from the float32 logits in chunks of tokens
  (amber_repro/training/logprobs.py); TRL uses its fused LM head (tiled log-probs), and computes
  extra metrics (entropy, token accuracy, mean logits). Both run the model with use_cache=False.
- TRL's optimizer sees the same parameters and settings, but goes through accelerate's wrappers and
  the Trainer's loop (gradient clipping via accelerate, its own dataloader and collator).
Measured on CPU (both sides would take cuda:0 where one is visible; not tried). The machine may
be shared: rerun, and compare only figures from one session and one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from peer_inputs import BETAS, SFT, build_20m, child_env, describe_work, ensure_pipeline
from peer_report import summarize, sweep_table, table
from peer_runs import run_ours, run_trl, run_trl_sweep
from peer_trl_child import trl_child

REPO = Path(__file__).resolve().parents[1]


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


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def parse_args() -> argparse.Namespace:
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
    parser.add_argument(
        "--jobs",
        type=positive,
        default=1,
        help="with --sweep: processes at a time per side, CPUs // JOBS threads each (default 1)",
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
    if args.jobs != 1 and not args.sweep:
        parser.error(f"--jobs {args.jobs} needs --sweep (only the sweep runs processes at once)")
    return args


def run_side(side: str, work, args, repo: Path, pipeline: Path, scratch: Path) -> dict:
    """One side of one repeat; in a sweep, both sides run args.jobs processes at a time."""
    if not args.sweep:
        if side == "ours":
            return run_ours(work, (work.beta,), repo, pipeline, scratch / "ours")
        return run_trl(work, work.beta, repo, pipeline, scratch / "trl")
    if side == "ours":
        return run_ours(work, BETAS, repo, pipeline, scratch / "ours", args.jobs)
    return run_trl_sweep(work, repo, pipeline, scratch, args.jobs)


def main() -> None:
    args = parse_args()
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
            "jobs": args.jobs if args.sweep else None,
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
                run[side] = run_side(side, work, args, repo, pipeline, scratch)
                wall = run[side]["wall_s"]
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

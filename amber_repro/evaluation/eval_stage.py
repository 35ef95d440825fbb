"""Evaluation of saved checkpoints: lm-eval on each as saved, a safety preference task of our own,
and the DPO model's implicit rewards on the held-out pairs. The workflow runs this stage once per
model (results/ambersafe/eval/<model>.json), so that a new DPO model re-evaluates only itself, and
`eval-summary` (eval_summary.py) gathers the parts and the safety verdicts into eval.json.

A part (schema_version 1):
  models.<name>.path / .weights_sha256        which checkpoint was evaluated
  models.<name>.tasks.<task>.<metric>          e.g. acc, acc_stderr, acc_norm, acc_norm_stderr;
                                               a metric of an lm-eval filter other than "none"
                                               is <metric>/<filter>, e.g. gsm8k's
                                               exact_match/strict-match
  models.<name>.tasks.<task>.num_fewshot / .samples
  dpo_rewards.{rewards/accuracies, rewards/margins, rewards/chosen, rewards/rejected, pairs, beta,
               loss_type}                      (when the DPO model is among the models)
  versions.{lm_eval, tasks.<task>, software}
  kernels                                      TF32 and deterministic kernels in effect
  config                                       the evaluation settings that produced the file
  run                                          commit, dirty flag, config and lock hashes
  timing                                       the only part that changes between identical runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import add_settings_arguments, run_settings
from amber_repro.config.eval_sections import EvalSettings
from amber_repro.config.sections import DataSettings, DPOSettings, Reproducibility, Tokenization
from amber_repro.data.tokenization import Limits
from amber_repro.evaluation.safety_task import SAFETY_TASK, safety_task
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.run_context import (
    command_line,
    kernel_settings,
    run_context,
    software_versions,
)
from amber_repro.storage import write_json
from amber_repro.training.losses import preference_loss, reward_metrics
from amber_repro.training.pairs import (
    PAIR_TEXT,
    concatenated_logps,
    drop_or_refuse_eos,
    read_reference_logps,
    tokenize_pairs,
)
from amber_repro.training.runtime import load_model, load_tokenizer, processes, set_kernels


def safety_task_config(pairs_path: Path, work_dir: Path) -> dict:
    """The safety preference task (safety_task.py) over the held-out pairs, its documents written
    into work_dir."""
    work_dir.mkdir(parents=True, exist_ok=True)
    docs = work_dir / f"{SAFETY_TASK}.parquet"
    pl.read_parquet(pairs_path).select(
        "source_row",
        "prompt",
        pl.concat_list("chosen", "rejected").alias("choices"),
        pl.lit(0).alias("label"),
    ).write_parquet(docs)
    return safety_task(docs)


def parse_task(text: str) -> tuple[str, int]:
    """'arc_challenge:25' -> ('arc_challenge', 25); no count means zero-shot."""
    name, _, shots = text.partition(":")
    return name, int(shots or 0)


# eval.precision -> lm-eval's dtype (the harness's half precision for 7B models: float16).
HARNESS_DTYPES = {"float32": "float32", "float16": "float16", "bf16": "bfloat16"}


def metric_name(key: str) -> str:
    """lm-eval's "metric,filter" key: the metric alone for the "none" filter, else metric/filter
    (gsm8k reports exact_match under two filters, strict-match and flexible-extract)."""
    metric, _, kind = key.partition(",")
    return metric if kind in ("", "none") else f"{metric}/{kind}"


def harness_results(
    model_path: Path, tasks: list[tuple[str | dict, int]], harness
) -> tuple[dict, dict]:
    """Run lm-eval's simple_evaluate for each (task, shots) on one saved checkpoint, with the
    harness settings (precision, batch_size, limit, bootstrap_iters) of EvalSettings or
    ChatEvalSettings.

    Returns ({task: {metric: value, num_fewshot, samples}}, {task: version}).
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(
        pretrained=str(model_path),
        backend="causal",
        dtype=HARNESS_DTYPES[harness.precision],
        batch_size=harness.batch_size,
        device=str(processes().device),
        trust_remote_code=False,
    )
    # One index of tasks for every call (simple_evaluate builds its own otherwise), and lm-eval's
    # ~14,000 built-in task files read only when a task is named: indexing them takes 18 s on a
    # 2-core CPU, and the safety task is a config of ours (docs/measurements.md).
    task_manager = TaskManager(include_defaults=any(isinstance(task, str) for task, _ in tasks))
    scores, versions = {}, {}
    for task, shots in tasks:
        output = simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=task_manager,
            num_fewshot=shots,
            limit=harness.limit,
            log_samples=False,
            bootstrap_iters=harness.bootstrap_iters,
        )
        for name, metrics in output["results"].items():
            entry = {
                metric_name(key): value
                for key, value in metrics.items()
                if key not in ("alias", "sample_len") and isinstance(value, (int, float))
            }
            entry["num_fewshot"] = shots
            entry["samples"] = output.get("n-samples", {}).get(name, {}).get("effective")
            scores[name] = dict(sorted(entry.items()))
        versions.update({name: version for name, version in output["versions"].items()})
    return scores, versions


@torch.no_grad()
def dpo_rewards(
    model_path: Path, pairs_path: Path, ref_path: Path, dpo: DPOSettings, tokens, batch_size: int
) -> dict:
    """Implicit rewards beta * (policy - reference) of the DPO model over every held-out pair."""
    procs = processes()
    model = load_model(model_path, torch.float32, procs.device).eval()
    tokenizer = load_tokenizer(model_path)
    frame = pl.read_parquet(pairs_path)
    reference = read_reference_logps(ref_path, frame)
    ref = torch.tensor(
        reference.select("reference_chosen_logps", "reference_rejected_logps").to_numpy(),
        dtype=torch.float32,
    )
    pairs = tokenize_pairs(tokenizer, frame, Limits(tokens.max_length, tokens.max_prompt_length))
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        c, r = concatenated_logps(
            model, pairs[start : start + batch_size], tokenizer.pad_token_id, procs.device
        )
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    _, chosen_rewards, rejected_rewards = preference_loss(
        torch.cat(chosen),
        torch.cat(rejected),
        ref[:, 0],
        ref[:, 1],
        beta=dpo.beta,
        loss_type=dpo.loss,
    )
    return {
        **reward_metrics(chosen_rewards, rejected_rewards),
        "pairs": len(pairs),
        "beta": dpo.beta,
        "loss_type": dpo.loss,
    }


# The harness settings (harness_results), shared with chat-eval's section of the same name.
HARNESS_KEYS = ("batch_size", "limit", "bootstrap_iters", "precision")
# The settings main receives, in this order.
SECTIONS = (
    (EvalSettings, HARNESS_KEYS),
    (DPOSettings, ("beta", "loss")),
    (DataSettings, ("on_malformed",)),
    Tokenization,
    Reproducibility,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a save_pretrained folder to evaluate (repeatable), e.g. dpo=results/ambersafe/dpo",
    )
    parser.add_argument(
        "--pairs", type=Path, required=True, help="held-out pairs (pairs-test.parquet)"
    )
    parser.add_argument(
        "--ref-logps", type=Path, help="reference log-probs of --pairs (for the DPO rewards)"
    )
    parser.add_argument(
        "--dpo-model", default="dpo", help="which NAME gets the implicit-reward metrics"
    )
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME[:SHOTS]",
        help="an lm-eval task (repeatable)",
    )
    add_settings_arguments(parser, *SECTIONS)
    parser.add_argument(
        "--work-dir", type=Path, required=True, help="scratch space (the safety task's documents)"
    )
    parser.add_argument("--out", type=Path, required=True, help="eval.json")


def usable_pairs(
    pairs: Path, work_dir: Path, on_malformed: str, model_path: Path
) -> tuple[Path, int]:
    """The held-out pairs every metric is computed on: those ref-logps and DPO used too (rows
    whose text holds the EOS token refused or, with data.on_malformed: drop, dropped)."""
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(pairs), load_tokenizer(model_path), pairs, PAIR_TEXT, on_malformed
    )
    if not dropped:
        return pairs, 0
    work_dir.mkdir(parents=True, exist_ok=True)
    kept = work_dir / "pairs-usable.parquet"
    frame.write_parquet(kept)
    return kept, dropped


def evaluate_model(report: dict, name: str, path: str, tasks, harness: EvalSettings) -> float:
    """One model's harness scores into `report`; returns the seconds it took."""
    began = time.perf_counter()
    scores, versions = harness_results(Path(path), tasks, harness)
    report["models"][name] = {
        "path": path,
        "weights_sha256": {
            p.name: sha256_file(p) for p in sorted(Path(path).glob("*.safetensors"))
        },
        "tasks": scores,
    }
    report["versions"]["tasks"].update(versions)
    print(
        f"{name}: "
        + ", ".join(
            f"{task} acc {s.get('acc', float('nan')):.4f} "
            f"acc_norm {s.get('acc_norm', float('nan')):.4f}"
            for task, s in scores.items()
        )
    )
    return round(time.perf_counter() - began, 3)


def main(
    args: argparse.Namespace,
    harness: EvalSettings,
    dpo: DPOSettings,
    data: DataSettings,
    tokens: Tokenization,
    repro: Reproducibility,
) -> None:
    set_kernels(repro.deterministic, repro.tf32)
    started = time.perf_counter()
    models = dict(item.split("=", 1) for item in args.model)
    first_model = Path(next(iter(models.values())))
    pairs_path, dropped = usable_pairs(args.pairs, args.work_dir, data.on_malformed, first_model)
    tasks = [(safety_task_config(pairs_path, args.work_dir), 0), *map(parse_task, args.task)]
    report = {"schema_version": 1, "models": {}, "versions": {"tasks": {}}}
    report["pairs_dropped"] = {"text contains EOS": dropped}
    seconds = {
        name: evaluate_model(report, name, path, tasks, harness) for name, path in models.items()
    }
    if args.dpo_model in models and args.ref_logps:
        report["dpo_rewards"] = dpo_rewards(
            Path(models[args.dpo_model]),
            pairs_path,
            args.ref_logps,
            dpo,
            tokens,
            harness.batch_size,
        )
    software = software_versions()
    report["versions"].update(lm_eval=software.get("lm_eval"), software=software)
    report["kernels"] = kernel_settings()
    sections = (harness, dpo, data, tokens, repro)
    report["config"] = run_settings(args, SECTIONS, sections, {"out", "work_dir", "stage"})
    report["run"] = run_context()
    report["inputs"] = {str(p): sha256_file(p) for p in (args.pairs, args.ref_logps) if p}
    report["timing"] = {
        "seconds_per_model": seconds,
        "total_seconds": round(time.perf_counter() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["command"] = command_line()
    write_json(args.out, report)
    print(f"wrote {args.out}")

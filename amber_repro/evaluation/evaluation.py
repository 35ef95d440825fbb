"""Evaluation: lm-eval on each checkpoint as saved, a safety preference task of our own, and the DPO
model's implicit rewards on the held-out pairs; one eval.json with stable keys.

eval.json (schema_version 1):
  models.<name>.path / .weights_sha256        which checkpoint was evaluated
  models.<name>.tasks.<task>.<metric>          e.g. acc, acc_stderr, acc_norm, acc_norm_stderr
  models.<name>.tasks.<task>.num_fewshot / .samples
  models.<name>.harmless_rate                  {value, ci_low, ci_high, safe, total, empty}: answers
                                               to harmful prompts judged safe (safety_eval.py)
  safety                                       the judge's identity and accuracy, the interval's
                                               level, the verdicts file and its content's sha256
  dpo_rewards.{rewards/accuracies, rewards/margins, rewards/chosen, rewards/rejected, pairs, beta,
               loss_type}
  versions.{lm_eval, tasks.<task>, software}
  config                                       the evaluation settings that produced the file
  run                                          commit, dirty flag, config and lock hashes
  timing                                       the only part that changes between identical runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import polars as pl
import torch

from amber_repro.infrastructure.configuration import add_settings_arguments
from amber_repro.infrastructure.provenance import (
    command_line,
    read_json,
    run_context,
    sha256_file,
    software_versions,
    write_json,
)
from amber_repro.infrastructure.settings import (
    DataSettings,
    DPOSettings,
    EvalSettings,
    Reproducibility,
    Tokenization,
)
from amber_repro.training import training as T
from amber_repro.training.losses import preference_loss, reward_metrics
from amber_repro.training.pairs import (
    PAIR_TEXT,
    concatenated_logps,
    drop_or_refuse_eos,
    read_reference_logps,
    tokenize_pairs,
)

SAFETY_TASK = "saferlhf_preference"


def safety_task_config(pairs_path: Path, work_dir: Path) -> dict:
    """An lm-eval multiple-choice task over held-out pairs: is the safe response more likely?

    Scored by lm-eval's loglikelihood of each response given the raw prompt, with no separator (as
    the model was trained); the safe (chosen) response is choice 0, the gold answer.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    docs = work_dir / f"{SAFETY_TASK}.parquet"
    pl.read_parquet(pairs_path).select(
        "source_row",
        "prompt",
        pl.concat_list("chosen", "rejected").alias("choices"),
        pl.lit(0).alias("label"),
    ).write_parquet(docs)
    return {
        "task": SAFETY_TASK,
        "dataset_path": "parquet",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def parse_task(text: str) -> tuple[str, int]:
    """'arc_challenge:25' -> ('arc_challenge', 25); no count means zero-shot."""
    name, _, shots = text.partition(":")
    return name, int(shots or 0)


def harness_results(
    model_path: Path, tasks: list[tuple[str | dict, int]], args
) -> tuple[dict, dict]:
    """Run lm-eval's simple_evaluate for each (task, shots) on one saved checkpoint.

    Returns ({task: {metric: value, num_fewshot, samples}}, {task: version}).
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=str(model_path),
        backend="causal",
        dtype="float32",
        batch_size=args.batch_size,
        device=str(T.processes().device),
        trust_remote_code=False,
    )
    scores, versions = {}, {}
    for task, shots in tasks:
        output = simple_evaluate(
            model=lm,
            tasks=[task],
            num_fewshot=shots,
            limit=args.limit,
            log_samples=False,
            bootstrap_iters=args.bootstrap_iters,
        )
        for name, metrics in output["results"].items():
            entry = {
                key.split(",")[0]: value
                for key, value in metrics.items()
                if key not in ("alias", "sample_len") and isinstance(value, (int, float))
            }
            entry["num_fewshot"] = shots
            entry["samples"] = output.get("n-samples", {}).get(name, {}).get("effective")
            scores[name] = dict(sorted(entry.items()))
        versions.update({name: version for name, version in output["versions"].items()})
    return scores, versions


@torch.no_grad()
def dpo_rewards(model_path: Path, pairs_path: Path, ref_path: Path, args) -> dict:
    """Implicit rewards beta * (policy - reference) of the DPO model over every held-out pair."""
    procs = T.processes()
    model = T.load_model(model_path, torch.float32, procs.device).eval()
    tokenizer = T.load_tokenizer(model_path)
    frame = pl.read_parquet(pairs_path)
    reference = read_reference_logps(ref_path, frame)
    ref = torch.tensor(
        reference.select("reference_chosen_logps", "reference_rejected_logps").to_numpy(),
        dtype=torch.float32,
    )
    pairs = tokenize_pairs(tokenizer, frame, T.Limits(args.max_length, args.max_prompt_length))
    chosen, rejected = [], []
    for start in range(0, len(pairs), args.batch_size):
        c, r = concatenated_logps(
            model, pairs[start : start + args.batch_size], tokenizer.pad_token_id, procs.device
        )
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    _, chosen_rewards, rejected_rewards = preference_loss(
        torch.cat(chosen),
        torch.cat(rejected),
        ref[:, 0],
        ref[:, 1],
        beta=args.beta,
        loss_type=args.loss,
    )
    return {
        **reward_metrics(chosen_rewards, rejected_rewards),
        "pairs": len(pairs),
        "beta": args.beta,
        "loss_type": args.loss,
    }


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
        "--safety", type=Path, help="the safety-judge verdicts JSON (harmless_rate per model)"
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
    add_settings_arguments(
        parser,
        (EvalSettings, ("batch_size", "limit", "bootstrap_iters")),
        (DPOSettings, ("beta", "loss")),
        (DataSettings, ("on_malformed",)),
        Tokenization,
        Reproducibility,
    )
    parser.add_argument(
        "--work-dir", type=Path, required=True, help="scratch space (the safety task's documents)"
    )
    parser.add_argument("--out", type=Path, required=True, help="eval.json")


def usable_pairs(args: argparse.Namespace, model_path: Path) -> tuple[Path, int]:
    """The held-out pairs every metric is computed on: those ref-logps and DPO used too (rows
    whose text holds the EOS token refused or, with data.on_malformed: drop, dropped)."""
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(args.pairs),
        T.load_tokenizer(model_path),
        args.pairs,
        PAIR_TEXT,
        args.on_malformed,
    )
    if not dropped:
        return args.pairs, 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    kept = args.work_dir / "pairs-usable.parquet"
    frame.write_parquet(kept)
    return kept, dropped


def merge_safety(report: dict, verdicts_path: Path) -> None:
    """Copy each evaluated model's harmless_rate from the verdicts, for the same checkpoint only
    (an experiment's DPO model is not the default one)."""
    verdicts = read_json(verdicts_path)
    for name, entry in report["models"].items():
        judged = verdicts["models"].get(name)
        if judged and judged["path"] == entry["path"]:
            entry["harmless_rate"] = judged["harmless_rate"]
    report["safety"] = {
        "judge": verdicts["judge"],
        "confidence": verdicts["confidence"],
        # Of the verdicts without their `run` block (host, time, commit): a replay that judges
        # the same answers the same way gives the same eval.json.
        "verdicts": {"path": str(verdicts_path), "content_sha256": content_sha256(verdicts)},
    }


def content_sha256(record: dict) -> str:
    """sha256 of a JSON record's canonical form without its run-specific blocks."""
    reproducible = {k: v for k, v in record.items() if k not in ("run", "timing")}
    text = json.dumps(reproducible, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def main(args: argparse.Namespace) -> None:
    T.set_determinism(args.deterministic)
    started = time.perf_counter()
    models = dict(item.split("=", 1) for item in args.model)
    pairs_path, dropped = usable_pairs(args, Path(next(iter(models.values()))))
    tasks = [(safety_task_config(pairs_path, args.work_dir), 0), *map(parse_task, args.task)]
    report = {"schema_version": 1, "models": {}, "versions": {"tasks": {}}}
    report["pairs_dropped"] = {"text contains EOS": dropped}
    seconds = {}
    for name, path in models.items():
        began = time.perf_counter()
        scores, versions = harness_results(Path(path), tasks, args)
        report["models"][name] = {
            "path": path,
            "weights_sha256": {
                p.name: sha256_file(p) for p in sorted(Path(path).glob("*.safetensors"))
            },
            "tasks": scores,
        }
        report["versions"]["tasks"].update(versions)
        seconds[name] = round(time.perf_counter() - began, 3)
        print(
            f"{name}: "
            + ", ".join(
                f"{task} acc {s.get('acc', float('nan')):.4f} "
                f"acc_norm {s.get('acc_norm', float('nan')):.4f}"
                for task, s in scores.items()
            )
        )
    if args.safety:
        merge_safety(report, args.safety)
    if args.dpo_model in models and args.ref_logps:
        report["dpo_rewards"] = dpo_rewards(
            Path(models[args.dpo_model]), pairs_path, args.ref_logps, args
        )
    software = software_versions()
    report["versions"].update(lm_eval=software.get("lm_eval"), software=software)
    settings = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in {"out", "work_dir", "stage"}
    }
    report["config"] = settings
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

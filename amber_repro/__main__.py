"""Command line: `python -m amber_repro <stage> --help`. One stage, explicit input and output
paths."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NamedTuple

from amber_repro.config.cli import check_settings
from amber_repro.errors import AmberError


class Stage(NamedTuple):
    module: str  # under amber_repro.
    add_arguments: str  # module function that declares the stage's flags on its parser
    main: str  # module function that runs it: main(args, *sections), sections typed and checked
    help: str


# The index of the code: each stage of `python -m amber_repro <stage>`, the module that implements
# it, the functions that declare its flags and run it, and its one-line help.
STAGES = {
    # data: fetched or generated, filtered, split
    "download-data": Stage(
        "data.download",
        "add_data_arguments",
        "main_data",
        "fetch PKU-SafeRLHF at a pinned revision",
    ),
    "synthesize": Stage(
        "data.synthetic", "add_arguments", "main", "generate the embedded synthetic dataset"
    ),
    "filter": Stage(
        "data.filtering", "add_arguments", "main", "raw rows -> preference pairs and SFT targets"
    ),
    "download-safety-prompts": Stage(
        "data.safety_download",
        "add_prompts_arguments",
        "main_prompts",
        "fetch the harmful prompts of the safety evaluation at a pinned revision",
    ),
    "chat-download": Stage(
        "data.chat_download",
        "add_arguments",
        "main",
        "fetch one AmberChat source file at a pinned revision, sha256 checked",
    ),
    "chat-synthesize": Stage(
        "data.chat_synthetic",
        "add_arguments",
        "main",
        "generate the embedded synthetic conversations (both source schemas)",
    ),
    "chat-data": Stage(
        "data.chat_data",
        "add_arguments",
        "main",
        "mix, shuffle (seeded) and split the AmberChat conversations",
    ),
    # models: fetched or built
    "download-model": Stage(
        "models.hub", "add_model_arguments", "main_model", "fetch a base model at a pinned revision"
    ),
    "download-judge": Stage(
        "models.hub",
        "add_judge_arguments",
        "main_judge",
        "fetch the safety judge model at a pinned revision (weights as safetensors)",
    ),
    "base-model": Stage(
        "models.tiny_llama",
        "add_arguments",
        "main",
        "build the embedded tiny LLaMA and its tokenizer",
    ),
    "chat-base": Stage(
        "models.tiny_amber",
        "add_arguments",
        "main",
        "build the embedded tiny Amber with a LLaMA-style SentencePiece tokenizer",
    ),
    # training
    "sft": Stage(
        "training.sft", "add_arguments", "main", "supervised finetuning on the SFT targets"
    ),
    "ref-logps": Stage(
        "training.ref_logps",
        "add_arguments",
        "main",
        "the frozen SFT model's log-probs of every pair",
    ),
    "dpo": Stage(
        "training.dpo",
        "add_arguments",
        "main",
        "DPO (and IPO, conservative, reference-free) training",
    ),
    "chat-sft": Stage(
        "training.chat_sft",
        "add_arguments",
        "main",
        "instruction finetuning Amber -> AmberChat (FastChat's recipe)",
    ),
    # evaluation
    "eval-datasets": Stage(
        "evaluation.eval_datasets",
        "add_arguments",
        "main",
        "fill the datasets cache for lm-eval tasks",
    ),
    "eval": Stage(
        "evaluation.eval_stage",
        "add_arguments",
        "main",
        "lm-eval + safety task + DPO rewards of saved models -> one evaluation part",
    ),
    "eval-summary": Stage(
        "evaluation.eval_summary",
        "add_arguments",
        "main",
        "the per-model evaluation parts and the safety verdicts -> eval.json",
    ),
    "generate": Stage(
        "evaluation.generations", "add_arguments", "main", "greedy generations for held-out prompts"
    ),
    "safety-answers": Stage(
        "evaluation.safety_answers",
        "add_arguments",
        "main",
        "greedy answers of each model to harmful prompts",
    ),
    "safety-judge": Stage(
        "evaluation.safety_stage",
        "add_arguments",
        "main",
        "judge the answers safe or unsafe: harmless_rate with a confidence interval",
    ),
    "chat-eval": Stage(
        "evaluation.chat_eval",
        "add_arguments",
        "main",
        "lm-eval, held-out loss and generations of Amber and AmberChat -> eval.json",
    ),
    "plots": Stage(
        "evaluation.plots",
        "add_arguments",
        "main",
        "training curves and the eval table for the report",
    ),
    "sweep": Stage(
        "evaluation.sweep",
        "add_arguments",
        "main",
        "compare named experiments: sweep.json and a plot",
    ),
    # planning, provenance and settings
    "plan": Stage(
        "planning.plan",
        "add_arguments",
        "main",
        "each job's FLOPs, memory, GPU-hours and time against its limits, before submitting",
    ),
    "crate": Stage(
        "provenance.crate",
        "add_arguments",
        "main",
        "the run's Workflow Run RO-Crate: results/ro-crate-metadata.json",
    ),
    "archive": Stage(
        "provenance.archive",
        "add_arguments",
        "main",
        "one bundle of a finished run: code, config, lock, raw data, crate",
    ),
    "verify": Stage(
        "provenance.damage",
        "add_arguments",
        "main",
        "check every output the crate lists against its sha256: each damaged or missing file "
        "and the rule that makes it",
    ),
    "reproduce": Stage(
        "provenance.replay",
        "add_arguments",
        "main",
        "rerun a bundle offline in a new folder and verify every result",
    ),
    "settings": Stage(
        "config.settings", "add_arguments", "main", "resolved settings, schema, docs"
    ),
}


def stage_module(spec: Stage):
    return importlib.import_module(f"amber_repro.{spec.module}")


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The CLI; only the named stage's module is imported (so `filter` never loads torch)."""
    parser = argparse.ArgumentParser(prog="python -m amber_repro", description=__doc__)
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, spec in STAGES.items():
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help)
        if name == stage:
            getattr(stage_module(spec), spec.add_arguments)(sub)
    return parser


def main(argv: list[str] | None = None, on_imported: Callable[[], None] | None = None) -> int:
    """Run one stage from its command line; on_imported is called once the stage's module is
    imported, before the stage runs. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(next((a for a in argv if a in STAGES), None)).parse_args(argv)
        spec = STAGES[args.stage]
        module = stage_module(spec)
        if on_imported is not None:
            on_imported()
        getattr(module, spec.main)(args, *check_settings(args))
    except AmberError as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:  # Ctrl-C outside training, or a second one within (SigtermFlag)
        print(
            "error: interrupted (Ctrl-C): stopped at once; the last complete checkpoint, if "
            "any, is kept",
            file=sys.stderr,
        )
        return 130
    return 0


def exit_without_teardown(code: int) -> None:
    """End the process with `code` once its work is done, skipping the interpreter's teardown.

    Freeing torch's and transformers' modules at exit costs about 1.1 s of native work per process
    on a 2-core CPU (docs/measurements.md), which is nothing a stage needs: every output is
    written and closed before main returns. What a normal exit does first still runs here (atexit
    handlers: logging, pending futures, weakref finalizers; then buffered output is flushed). If a
    non-daemon thread is still running, a normal exit waits for it: so does this one, by returning.
    """
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def collect_after_imports() -> None:
    """Resume the cyclic garbage collector, paused while the stage's modules were imported: what
    was imported is exempt from its scans (gc.freeze), and it runs every 5,000 net allocations of
    container objects instead of 700.

    Importing torch and transformers builds some 370,000 long-lived objects, and the collector
    scans that heap again and again as it grows, and again for the transformers modules a stage
    imports later: measured on a 2-core CPU with the embedded default, 1.0 s of collections in
    each of the ref-logps and dpo processes (7 full ones), 0.11 to 0.15 s with this (none full;
    docs/measurements.md). Cycles made while the stage runs are still collected."""
    gc.freeze()
    gc.set_threshold(5000)
    gc.enable()


def run_command_line() -> None:
    """`python -m amber_repro ...`: main() with the process-level savings a caller of main() in
    its own process should not get (a paused collector during imports, no teardown at exit)."""
    gc.disable()
    exit_without_teardown(main(on_imported=collect_after_imports))


if __name__ == "__main__":
    run_command_line()

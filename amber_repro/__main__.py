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

from amber_repro.infrastructure.configuration import check_settings
from amber_repro.infrastructure.errors import AmberError

# stage name -> (module, argument builder, entry point, one-line help)
STAGES = {
    "download-data": (
        "amber_repro.data.download",
        "add_data_arguments",
        "main_data",
        "fetch PKU-SafeRLHF at a pinned revision",
    ),
    "download-model": (
        "amber_repro.data.download",
        "add_model_arguments",
        "main_model",
        "fetch a base model at a pinned revision",
    ),
    "synthesize": (
        "amber_repro.data.synthetic",
        "add_arguments",
        "main",
        "generate the embedded synthetic dataset",
    ),
    "filter": (
        "amber_repro.data.filtering",
        "add_arguments",
        "main",
        "raw rows -> preference pairs and SFT targets",
    ),
    "base-model": (
        "amber_repro.training.base_model",
        "add_arguments",
        "main",
        "build the embedded tiny LLaMA and its tokenizer",
    ),
    "chat-download": (
        "amber_repro.data.chat_download",
        "add_arguments",
        "main",
        "fetch one AmberChat source file at a pinned revision, sha256 checked",
    ),
    "chat-synthesize": (
        "amber_repro.data.chat_synthetic",
        "add_arguments",
        "main",
        "generate the embedded synthetic conversations (both source schemas)",
    ),
    "chat-data": (
        "amber_repro.data.chat_data",
        "add_arguments",
        "main",
        "mix, shuffle (seeded) and split the AmberChat conversations",
    ),
    "chat-base": (
        "amber_repro.training.chat_tokenizer",
        "add_arguments",
        "main",
        "build the embedded tiny Amber with a LLaMA-style SentencePiece tokenizer",
    ),
    "sft": (
        "amber_repro.training.sft",
        "add_arguments",
        "main",
        "supervised finetuning on the SFT targets",
    ),
    "ref-logps": (
        "amber_repro.training.ref_logps",
        "add_arguments",
        "main",
        "the frozen SFT model's log-probs of every pair",
    ),
    "dpo": (
        "amber_repro.training.dpo",
        "add_arguments",
        "main",
        "DPO (and IPO, conservative, reference-free) training",
    ),
    "eval": (
        "amber_repro.evaluation.evaluation",
        "add_arguments",
        "main",
        "lm-eval + safety task + DPO rewards of saved models -> one evaluation part",
    ),
    "plan": (
        "amber_repro.planning.plan",
        "add_arguments",
        "main",
        "each job's FLOPs, memory, GPU-hours and time against its limits, before submitting",
    ),
    "eval-summary": (
        "amber_repro.evaluation.eval_summary",
        "add_arguments",
        "main",
        "the per-model evaluation parts and the safety verdicts -> eval.json",
    ),
    "eval-datasets": (
        "amber_repro.evaluation.eval_datasets",
        "add_arguments",
        "main",
        "fill the datasets cache for lm-eval tasks",
    ),
    "generate": (
        "amber_repro.evaluation.generations",
        "add_arguments",
        "main",
        "greedy generations for held-out prompts",
    ),
    "download-safety-prompts": (
        "amber_repro.data.safety_download",
        "add_prompts_arguments",
        "main_prompts",
        "fetch the harmful prompts of the safety evaluation at a pinned revision",
    ),
    "download-judge": (
        "amber_repro.data.safety_download",
        "add_judge_arguments",
        "main_judge",
        "fetch the safety judge model at a pinned revision (weights as safetensors)",
    ),
    "safety-answers": (
        "amber_repro.evaluation.safety_answers",
        "add_arguments",
        "main",
        "greedy answers of each model to harmful prompts",
    ),
    "safety-judge": (
        "amber_repro.evaluation.safety_eval",
        "add_arguments",
        "main",
        "judge the answers safe or unsafe: harmless_rate with a confidence interval",
    ),
    "chat-sft": (
        "amber_repro.training.chat_sft",
        "add_arguments",
        "main",
        "instruction finetuning Amber -> AmberChat (FastChat's recipe)",
    ),
    "chat-eval": (
        "amber_repro.evaluation.chat_eval",
        "add_arguments",
        "main",
        "lm-eval, held-out loss and generations of Amber and AmberChat -> eval.json",
    ),
    "plots": (
        "amber_repro.evaluation.plots",
        "add_arguments",
        "main",
        "training curves and the eval table for the report",
    ),
    "sweep": (
        "amber_repro.evaluation.sweep",
        "add_arguments",
        "main",
        "compare named experiments: sweep.json and a plot",
    ),
    "crate": (
        "amber_repro.infrastructure.crate",
        "add_arguments",
        "main",
        "the run's Workflow Run RO-Crate: results/ro-crate-metadata.json",
    ),
    "archive": (
        "amber_repro.infrastructure.archive",
        "add_arguments",
        "main",
        "one bundle of a finished run: code, config, lock, raw data, crate",
    ),
    "reproduce": (
        "amber_repro.infrastructure.replay",
        "add_arguments",
        "main",
        "rerun a bundle offline in a new folder and verify every result",
    ),
    "settings": (
        "amber_repro.infrastructure.configuration",
        "add_arguments",
        "main",
        "resolved settings, schema, docs",
    ),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The CLI; only the named stage's module is imported (so `filter` never loads torch)."""
    parser = argparse.ArgumentParser(prog="python -m amber_repro", description=__doc__)
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module_name, add_arguments, _, help_text) in STAGES.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == stage:
            getattr(importlib.import_module(module_name), add_arguments)(sub)
    return parser


def main(argv: list[str] | None = None, on_imported: Callable[[], None] | None = None) -> int:
    """Run one stage from its command line; on_imported is called once the stage's module is
    imported, before the stage runs. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(next((a for a in argv if a in STAGES), None)).parse_args(argv)
        module_name, _, entry, _ = STAGES[args.stage]
        module = importlib.import_module(module_name)
        if on_imported is not None:
            on_imported()
        check_settings(args)
        getattr(module, entry)(args)
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

"""Command line: `python -m amber_repro <stage> --help`. One stage, explicit input and output
paths."""

from __future__ import annotations

import argparse
import importlib
import sys

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
        "lm-eval + safety task + DPO rewards -> eval.json",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(next((a for a in argv if a in STAGES), None)).parse_args(argv)
        module_name, _, entry, _ = STAGES[args.stage]
        module = importlib.import_module(module_name)
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


if __name__ == "__main__":
    sys.exit(main())

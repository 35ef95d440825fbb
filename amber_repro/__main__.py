"""Command line: `python -m amber_repro <stage> --help`. One stage, explicit input and output paths."""

from __future__ import annotations

import argparse
import importlib
import sys

# stage name -> (module, argument builder, entry point, one-line help)
STAGES = {
    "download-data": ("amber_repro.download", "add_data_arguments", "main_data", "fetch PKU-SafeRLHF at a pinned revision"),
    "download-model": ("amber_repro.download", "add_model_arguments", "main_model", "fetch a base model at a pinned revision"),
    "synthesize": ("amber_repro.synthetic", "add_arguments", "main", "generate the embedded synthetic dataset"),
    "filter": ("amber_repro.filtering", "add_arguments", "main", "raw rows -> preference pairs and SFT targets"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m amber_repro", description=__doc__)
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module_name, add_arguments, _, help_text) in STAGES.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        getattr(importlib.import_module(module_name), add_arguments)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, _, entry, _ = STAGES[args.stage]
    module = importlib.import_module(module_name)
    try:
        getattr(module, entry)(args)
    except getattr(module, "DataError", ()) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

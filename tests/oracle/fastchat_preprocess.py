"""Runs FastChat's own `preprocess` (fastchat/train/train.py, fschat 0.2.34) as an oracle.

Run by tests/test_chat_oracle.py in .venv-fastchat, never imported by the package. Reads JSON on
stdin: {"tokenizer": DIR, "batches": [{"legacy": bool, "max_length": N, "conversations":
[[{"from", "value"}, ...], ...]}, ...]}; writes one {"input_ids", "labels"} per batch, padded to
max_length as FastChat returns them. The tokenizer is loaded as FastChat's train.py loads it (right
padding, use_fast=False, pad = unk), with the batch's legacy mode.
"""

import json
import sys

import transformers
from fastchat.train.train import preprocess


def run(folder: str, batch: dict) -> dict:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        folder,
        model_max_length=batch["max_length"],
        padding_side="right",
        use_fast=False,
        legacy=batch["legacy"],
    )
    if tokenizer.pad_token != tokenizer.unk_token:
        tokenizer.pad_token = tokenizer.unk_token
    result = preprocess(batch["conversations"], tokenizer)
    return {key: result[key].tolist() for key in ("input_ids", "labels")}


def main() -> None:
    request = json.load(sys.stdin)
    json.dump([run(request["tokenizer"], batch) for batch in request["batches"]], sys.stdout)


if __name__ == "__main__":
    main()

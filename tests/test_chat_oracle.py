"""Our FastChat loss mask against FastChat's own `preprocess` (fschat 0.2.34, the oracle), on the
same LLaMA-style SentencePiece tokenizer, in both legacy modes.

FastChat runs in .venv-fastchat (`make .venv-fastchat/.installed`, a prerequisite of `make test`):
its pins clash with the lock, so it is not in .venv. Without it this test fails, never skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_fixtures import MISMATCHED, MULTI_TURN, SINGLE_TURN, train_tokenizer
from processes import run

from amber_repro.data.chat_template import IGNORE_TOKEN_ID, preprocess
from amber_repro.models.tiny_amber import load_tokenizer

pytestmark = pytest.mark.slow  # starts stage or oracle processes

ROOT = Path(__file__).resolve().parent.parent
FASTCHAT_PYTHON = ROOT / ".venv-fastchat" / "bin" / "python"
ORACLE = ROOT / "tests" / "oracle" / "fastchat_preprocess.py"
LONG = 2048
SHORT = 190  # cuts MULTI_TURN (255 tokens with the test tokenizer) after its first answer
CONVERSATIONS = [MULTI_TURN, SINGLE_TURN, MULTI_TURN[:4], MISMATCHED]


def fastchat_form(turns):
    return [{"from": turn["role"], "value": turn["text"]} for turn in turns]


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """(legacy, max_length, conversations) -> (ours, FastChat's), both padded to max_length."""
    if not FASTCHAT_PYTHON.exists():
        pytest.fail(
            f"{FASTCHAT_PYTHON} is missing: run `make .venv-fastchat/.installed` (FastChat, the "
            "oracle of this test)"
        )
    folder = train_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    cases = [
        (legacy, max_length, conversations)
        for legacy in (True, False)
        for max_length, conversations in ((LONG, CONVERSATIONS), (SHORT, [MULTI_TURN]))
    ]
    request = {
        "tokenizer": str(folder),
        "batches": [
            {
                "legacy": legacy,
                "max_length": max_length,
                "conversations": list(map(fastchat_form, c)),
            }
            for legacy, max_length, c in cases
        ],
    }
    oracle = run([FASTCHAT_PYTHON, ORACLE], input=json.dumps(request))
    assert oracle.returncode == 0, oracle.stderr[-3000:]
    theirs = json.loads(oracle.stdout)
    results = {}
    for (legacy, max_length, conversations), their in zip(cases, theirs, strict=True):
        tokenizer = load_tokenizer(folder, legacy=legacy)
        ours = preprocess(conversations, tokenizer, max_length)
        pad = tokenizer.pad_token_id
        padded = {
            "input_ids": [ids + [pad] * (max_length - len(ids)) for ids in ours.input_ids],
            "labels": [
                labels + [IGNORE_TOKEN_ID] * (max_length - len(labels)) for labels in ours.labels
            ],
        }
        results[legacy, max_length] = (ours, padded, their)
    return results


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("max_length", [LONG, SHORT])
def test_same_input_ids_and_labels_as_fastchat(batches, legacy, max_length):
    _, padded, theirs = batches[legacy, max_length]
    assert padded["input_ids"] == theirs["input_ids"]
    for index, (ours, their) in enumerate(zip(padded["labels"], theirs["labels"], strict=True)):
        assert ours == their, f"conversation {index}: labels differ from FastChat's"


@pytest.mark.parametrize("legacy", [True, False])
def test_the_cases_exercise_what_they_claim(batches, legacy):
    """Guards the comparison itself: a case that stopped truncating or stopped triggering the
    mismatch rule would make the comparison above weaker without failing it."""
    ours, _, theirs = batches[legacy, LONG]
    assert ours.mismatched == [3]
    assert all(label == IGNORE_TOKEN_ID for label in theirs["labels"][3])
    for index in range(3):
        assert any(label != IGNORE_TOKEN_ID for label in theirs["labels"][index])
    short, _, their_short = batches[legacy, SHORT]
    assert short.mismatched == []
    assert len(short.input_ids[0]) == SHORT < len(ours.input_ids[0])
    assert any(label != IGNORE_TOKEN_ID for label in their_short["labels"][0])

"""FastChat's vicuna_v1.1 template and loss mask (amber_repro/data/chat_template.py), checked by
hand; test_chat_oracle.py checks the same code against FastChat itself."""

from __future__ import annotations

import pytest
from chat_fixtures import MISMATCHED, MULTI_TURN, SINGLE_TURN, train_tokenizer

from amber_repro.data.chat_template import (
    IGNORE_TOKEN_ID,
    SYSTEM_MESSAGE,
    generation_prompt,
    message_token_length,
    preprocess,
    render_prompt,
)
from amber_repro.models.tiny_amber import load_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_render_prompt_is_fastchats_vicuna_v1_1_text():
    assert render_prompt(SINGLE_TURN) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. "
        "USER: Write python code. ASSISTANT: def f():\n    return 3.14</s>"
    )
    # A first turn from the assistant is skipped, as FastChat's preprocess does.
    assert render_prompt([{"role": "gpt", "text": "Hi!"}, *SINGLE_TURN]) == render_prompt(
        SINGLE_TURN
    )


def test_generation_prompt_ends_with_the_assistant_role():
    expected = (
        f"{SYSTEM_MESSAGE} USER: What is a fox? ASSISTANT: A quick brown animal, like a dog.</s>"
    )
    expected += "USER: Why 42?\nExplain in 2 lines. ASSISTANT:"
    assert generation_prompt(MULTI_TURN[:3]) == expected
    assert generation_prompt(MULTI_TURN[:4]) == expected  # the reference answer is dropped
    with pytest.raises(ValueError, match="no human turn"):
        generation_prompt([])


def test_roles_must_alternate(folder):
    turns = [SINGLE_TURN[0], SINGLE_TURN[0]]
    with pytest.raises(ValueError, match="conversation 1: turn 1 is from 'human', expected 'gpt'"):
        preprocess([SINGLE_TURN, turns], load_tokenizer(folder), 64)
    with pytest.raises(ValueError, match="role 'system'"):
        render_prompt([{"role": "system", "text": "x"}])


def trained_runs(labels):
    """The maximal runs of trained positions, as (start, stop)."""
    runs, start = [], None
    for position, label in enumerate([*labels, IGNORE_TOKEN_ID]):
        if label != IGNORE_TOKEN_ID and start is None:
            start = position
        elif label == IGNORE_TOKEN_ID and start is not None:
            runs.append((start, position))
            start = None
    return runs


@pytest.mark.parametrize("legacy", [True, False])
def test_only_the_assistant_answers_and_their_eos_are_trained(folder, legacy):
    tokenizer = load_tokenizer(folder, legacy=legacy)
    examples = preprocess([MULTI_TURN], tokenizer, 2048)
    ids, labels = examples.input_ids[0], examples.labels[0]
    assert examples.mismatched == []
    assert ids == tokenizer(render_prompt(MULTI_TURN)).input_ids
    answers = [turn["text"] for turn in MULTI_TURN if turn["role"] == "gpt"]
    runs = trained_runs(labels)
    assert len(runs) == len(answers)
    for (start, stop), answer in zip(runs, answers, strict=True):
        assert labels[start:stop] == ids[start:stop]
        # The answer's tokens (as tokenized alone: the space after "ASSISTANT:" is its dummy
        # prefix) and then "</s>"; the position before is the colon of "ASSISTANT:".
        alone = tokenizer(answer, add_special_tokens=False).input_ids
        assert ids[start:stop] == [*alone, tokenizer.eos_token_id]
        assert tokenizer.decode(ids[:start]).endswith("ASSISTANT:")


def test_a_length_mismatch_masks_the_whole_conversation(folder):
    tokenizer = load_tokenizer(folder)
    examples = preprocess([MULTI_TURN, MISMATCHED, SINGLE_TURN], tokenizer, 2048)
    assert examples.mismatched == [1]
    assert set(examples.labels[1]) == {IGNORE_TOKEN_ID}
    assert len(trained_runs(examples.labels[0])) == 3
    assert len(trained_runs(examples.labels[2])) == 1


def test_truncation_keeps_the_start_and_skips_the_mismatch_rule(folder):
    tokenizer = load_tokenizer(folder)
    full = preprocess([MULTI_TURN], tokenizer, 2048)
    cut = preprocess([MULTI_TURN], tokenizer, 190)
    assert cut.input_ids[0] == full.input_ids[0][:190]
    assert cut.labels[0] == full.labels[0][:190]
    assert cut.mismatched == []


def test_pad_must_be_unk(folder):
    tokenizer = load_tokenizer(folder)
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(ValueError, match="pad token '</s>' is not its unk token"):
        preprocess([SINGLE_TURN], tokenizer, 64)


def test_message_token_length_is_fastchats_split_count(folder):
    tokenizer = load_tokenizer(folder)
    text = "Because 42 is the answer."
    bos_and_pieces = 1 + len(tokenizer(text, add_special_tokens=False).input_ids)
    assert message_token_length(text, tokenizer) == bos_and_pieces + 6

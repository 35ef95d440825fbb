"""Tokenization against a plain transcription of the recipe's rule, for any lengths, and the
concatenated forward pass against separate forwards when the shorter sequences ARE padded.

The reference (the DPO reference's tokenize_batch_element): EOS appended to each response before
any length is measured; if prompt + longer response > max_length, keep the first max_prompt_length
prompt tokens; if still > max_length, cut every response to max_length - max_prompt_length
(keeping the start, even if that drops the EOS); labels -100 over the prompt. SFT is the chosen
side of the pair (target, target).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from amber_repro.data.tokenization import (
    IGNORE_INDEX,
    Limits,
    tokenize_pair,
    tokenize_sft,
    truncate,
)
from amber_repro.training.pairs import concatenated_logps

EOS = 2
CPU = torch.device("cpu")


class CharTokenizer:
    """One token per character (ids 4..43), so token counts are string lengths."""

    eos_token_id, pad_token_id = EOS, 3

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict:
        assert not add_special_tokens  # the recipe adds no BOS
        if isinstance(text, list):  # a batch, as a Hugging Face tokenizer takes one
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        return {"input_ids": [4 + ord(c) % 40 for c in text]}


def ids(text: str) -> list[int]:
    return [4 + ord(c) % 40 for c in text]


def reference_element(
    prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, max_prompt: int
) -> dict[str, dict[str, list[int]]]:
    """The recipe's rule, step by step as the reference writes it (responses without EOS in)."""
    chosen, rejected = [*chosen, EOS], [*rejected, EOS]
    longer_response_length = max(len(chosen), len(rejected))
    if len(prompt) + longer_response_length > max_length:
        prompt = prompt[:max_prompt]
    if len(prompt) + longer_response_length > max_length:
        chosen = chosen[: max_length - max_prompt]
        rejected = rejected[: max_length - max_prompt]
    return {
        side: {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}
        for side, response in (("chosen", chosen), ("rejected", rejected))
    }


# Strings over a small alphabet; lengths around the limits so every branch (and each boundary,
# total == max_length) is reached often.
text = st.text(alphabet="abcdefgh", max_size=24)


@st.composite
def limits(draw) -> tuple[int, int]:
    max_length = draw(st.integers(2, 24))
    return max_length, draw(st.integers(1, max_length - 1))


# Each @example sits on a boundary a plausible wrong version gets wrong:
# - prompt 6 + response 3 (with EOS) == max_length 9: nothing is cut (`>=` would cut the prompt);
# - prompt 2 (< max_prompt 4) + response 8 > 9: responses cut to 9 - 4 = 5, not 9 - len(prompt) = 7;
# - prompt 3 + response 6 == 9 with max_prompt 4: untouched (`>=` in the second test would cut
#   responses to 5).
@settings(max_examples=400, deadline=None)
@given(prompt=text, chosen=text, rejected=text, lim=limits())
@example(prompt="abcdef", chosen="ab", rejected="a", lim=(9, 4))
@example(prompt="ab", chosen="abcdefg", rejected="abc", lim=(9, 4))
@example(prompt="abc", chosen="abcde", rejected="", lim=(9, 4))
@example(prompt="abcdefgh", chosen="abcdefghabcdefgh", rejected="ab", lim=(10, 3))
def test_pair_tokenization_is_the_recipe_rule(prompt, chosen, rejected, lim):
    max_length, max_prompt = lim
    got = tokenize_pair(CharTokenizer(), prompt, chosen, rejected, Limits(max_length, max_prompt))
    want = reference_element(ids(prompt), ids(chosen), ids(rejected), max_length, max_prompt)
    assert got == want
    for side in ("chosen", "rejected"):  # whatever the inputs, the result fits max_length
        assert len(got[side]["input_ids"]) <= max_length


@settings(max_examples=300, deadline=None)
@given(prompt=text, response=text, lim=limits())
@example(prompt="abcdef", response="ab", lim=(9, 4))  # 6 + 3 == 9: not cut
@example(prompt="ab", response="abcdefgh", lim=(9, 4))  # cut to 9 - 4, not 9 - 2
def test_sft_tokenization_is_the_recipe_rule_for_one_target(prompt, response, lim):
    """Written for one response (no pair): the prompt is masked, response + EOS trained."""
    max_length, max_prompt = lim
    got = tokenize_sft(CharTokenizer(), prompt, response, Limits(max_length, max_prompt))
    p, r = ids(prompt), [*ids(response), EOS]
    if len(p) + len(r) > max_length:
        p = p[:max_prompt]
    if len(p) + len(r) > max_length:
        r = r[: max_length - max_prompt]
    assert got == {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.lists(st.integers(4, 50), max_size=20),
    responses=st.lists(st.lists(st.integers(4, 50), max_size=20), min_size=1, max_size=3),
    lim=limits(),
)
@example(prompt=[5] * 6, responses=[[6, 7, EOS]], lim=(9, 4))
@example(prompt=[5] * 2, responses=[[6] * 8], lim=(9, 4))
def test_truncate_keeps_starts_and_cuts_only_what_the_rule_says(prompt, responses, lim):
    """truncate on token lists (responses already ending where they end), by the rule's
    consequences rather than its steps."""
    max_length, max_prompt = lim
    got_prompt, got_responses = truncate(prompt, responses, Limits(max_length, max_prompt))
    longer = max(map(len, responses))
    assert got_prompt == prompt[: len(got_prompt)]  # keep-start
    for got, response in zip(got_responses, responses, strict=True):
        assert got == response[: len(got)]
    if len(prompt) + longer <= max_length:
        assert (got_prompt, got_responses) == (prompt, responses)
        return
    assert got_prompt == prompt[:max_prompt]
    if len(got_prompt) + longer <= max_length:
        assert got_responses == responses
    else:
        assert got_responses == [r[: max_length - max_prompt] for r in responses]
        assert len(got_prompt) + max(map(len, got_responses)) <= max_length


def test_the_eos_counts_towards_the_length_test():
    """prompt 5 + response 4 = 9 fits max_length 9 only without the EOS; with it, 10 > 9, so the
    prompt is cut to max_prompt_length 3 (appending the EOS after truncating would not cut)."""
    got = tokenize_pair(CharTokenizer(), "abcde", "abcd", "a", Limits(9, 3))
    assert got["chosen"]["input_ids"] == ids("abc") + ids("abcd") + [EOS]


# --- the concatenated forward with padding ------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_llama(44)


def alone_logps(model, sequence: dict[str, list[int]]) -> float:
    """One sequence, no padding, no batch: the summed log-prob of its labelled tokens."""
    input_ids = torch.tensor([sequence["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, :-1].double()
    labels = torch.tensor(sequence["labels"][1:])
    trained = labels != IGNORE_INDEX
    return logits.log_softmax(-1)[trained, labels[trained]].sum().item()


def test_concatenated_forward_equals_separate_forwards_for_padded_sequences(model):
    """Chosen and rejected of different lengths in every pair, so all but the longest of the
    (2 x pairs) rows are right-padded; each value must equal its own unpadded forward pass, in its
    own place (chosen i, rejected i). Tolerance 1e-4 absolute on sums of ~10-30 float32 token
    log-probs: padding changes the matrix shapes and so the last bits, an extra or missing token
    moves a value by ~log(44) = 3.8."""
    limits = Limits(40, 20)
    texts = [
        ("abcd", "efghabcdefgh", "ab"),
        ("abcdefghabcdefgh", "a", "bcdefg"),
        ("h", "gfedcba", "hgfedcbahgfedcbahgfe"),
    ]
    pairs = [tokenize_pair(CharTokenizer(), p, c, r, limits) for p, c, r in texts]
    lengths = {len(p[s]["input_ids"]) for p in pairs for s in ("chosen", "rejected")}
    assert len(lengths) == 6  # every row a different length: five of six are padded
    with torch.no_grad():
        chosen, rejected = concatenated_logps(model, pairs, CharTokenizer.pad_token_id, CPU)
    for i, pair in enumerate(pairs):
        assert chosen[i].item() == pytest.approx(alone_logps(model, pair["chosen"]), abs=1e-4)
        assert rejected[i].item() == pytest.approx(alone_logps(model, pair["rejected"]), abs=1e-4)

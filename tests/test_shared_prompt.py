"""A pair's shared prompt run once (training/shared_prompt.py): each response token sees exactly
what it sees in its own sequence, so log-probs and gradients are those of the separate rows."""

from __future__ import annotations

import types

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from amber_repro.data.tokenization import IGNORE_INDEX as I
from amber_repro.data.tokenization import sequence
from amber_repro.errors import ConfigError
from amber_repro.training import shared_prompt as sp
from amber_repro.training.pairs import concatenated_logps

CPU = torch.device("cpu")
EOS = 2


def pair(prompt: list[int], chosen: list[int], rejected: list[int]) -> dict:
    return {"chosen": sequence(prompt, chosen), "rejected": sequence(prompt, rejected)}


def test_a_pair_packs_into_head_and_two_branches_that_restart_at_the_last_prompt_token():
    row = sp.pack_pair(pair([5, 6, 7], [8, 9, EOS], [10, EOS]))
    assert row["input_ids"] == [5, 6, 7, 8, 9, EOS, 7, 10, EOS]
    assert row["position_ids"] == [0, 1, 2, 3, 4, 5, 2, 3, 4]
    assert row["segments"] == [sp.HEAD] * 2 + [sp.CHOSEN] * 4 + [sp.REJECTED] * 3
    assert row["labels"] == [I, I, I, 8, 9, EOS, I, 10, EOS]


def test_the_mask_keeps_the_branches_apart_and_gives_padding_one_key():
    segments = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    mask = sp.attention_mask(segments)[0, 0]
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],  # chosen: head + itself
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],  # rejected: head + itself, not chosen
            [1, 1, 0, 0, 1, 1, 0],
            [1, 0, 0, 0, 0, 0, 0],  # padding: key 0 only (no key at all would give NaN)
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, want)


def visible(row: dict, mask: torch.Tensor, i: int) -> list[tuple[int, int]]:
    """(position, token) of every key query i attends, by position."""
    keys = mask[i].nonzero().flatten().tolist()
    return sorted((row["position_ids"][j], row["input_ids"][j]) for j in keys)


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.lists(st.integers(4, 9), max_size=6),
    chosen=st.lists(st.integers(4, 9), max_size=6),
    rejected=st.lists(st.integers(4, 9), max_size=6),
    padding=st.integers(0, 3),
)
@example(prompt=[], chosen=[5], rejected=[6, 7], padding=1)  # no prompt
@example(prompt=[4], chosen=[], rejected=[], padding=0)  # one prompt token, EOS-only responses
def test_every_scored_token_sees_exactly_its_own_sequence_before_it(
    prompt, chosen, rejected, padding
):
    """Against the plain definition: a label scored at row index i (predicted by the output at
    i - 1) must be token t of its own sequence, with position t, predicted by a query at position
    t - 1 that sees exactly that sequence's tokens 0..t-1 at their positions; and the labels scored
    must be exactly the response tokens the separate sequences score (t >= 1)."""
    the_pair = pair(prompt, [*chosen, EOS], [*rejected, EOS])
    row = sp.pack_pair(the_pair)
    length = len(row["input_ids"]) + padding
    # A longer row beside it: this one is padded to its length.
    longer = {"input_ids": [4] * length, "position_ids": list(range(length))}
    longer |= {"segments": [sp.HEAD] * length, "labels": [I] * length}
    batch = sp.collate_rows([row, longer], pad_token_id=3)
    assert batch["input_ids"].shape == (2, length)
    mask = batch["attention_mask"][0, 0]
    padded = {k: batch[k][0].tolist() for k in ("input_ids", "position_ids", "segments")}
    scored = set()
    for i, label in enumerate(row["labels"]):
        if label == I:
            continue
        side = {sp.CHOSEN: "chosen", sp.REJECTED: "rejected"}[row["segments"][i]]
        ids = the_pair[side]["input_ids"]
        t = row["position_ids"][i]
        assert ids[t] == label and t >= 1
        assert row["segments"][i - 1] in (sp.HEAD, row["segments"][i])
        assert row["position_ids"][i - 1] == t - 1
        assert visible(padded, mask, i - 1) == [(p, ids[p]) for p in range(t)]
        scored.add((side, t))
    want = {
        (side, t)
        for side in ("chosen", "rejected")
        for t, label in enumerate(the_pair[side]["labels"])
        if label != I and t >= 1
    }
    assert scored == want
    for i in range(len(row["input_ids"]), length):  # padding queries attend something
        assert mask[i].any()


@pytest.fixture(scope="module")
def model():
    """Initialised 15x the usual scale, so that attention is peaked and depends on positions
    (at the default 0.02 it is nearly uniform, and a wrong position would go unnoticed)."""
    return tiny_llama(50, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      num_key_value_heads=2, initializer_range=0.3)  # fmt: skip


def random_pairs(n: int, seed: int) -> list[dict]:
    """Pairs with prompts of 0 to 12 tokens and responses of unequal lengths."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high + 1, (1,), generator=generator))
        return torch.randint(4, 50, (length,), generator=generator).tolist()

    prompts = [[], [9], *(tokens(2, 12) for _ in range(n - 2))]
    return [pair(p, [*tokens(1, 15), EOS], [*tokens(1, 15), EOS]) for p in prompts]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("min_saving", [0, 8])
def test_packed_rows_give_the_separate_rows_values_and_gradients(model, attention, min_saving):
    """One packed row per pair against the recipe's layout (chosen and rejected as separate
    padded rows): the same log-probs and parameter gradients to float32 rounding. The products
    run on other shapes, so sums may round differently: 1e-5 relative on the log-probs (sums of
    ~15 tokens); on gradients 1e-4 relative, or 1e-5 of the tensor's largest element (rounding
    scales with the magnitudes summed). A token seeing the other response, or one position off,
    moves a value by far more (the next test)."""
    model.set_attn_implementation(attention)
    pairs = random_pairs(9, seed=1)
    weights = torch.arange(1.0, 10.0)
    results, passes = [], []
    hook = model.register_forward_hook(lambda *_: passes.append(1))
    for share in (False, True):
        model.zero_grad()
        chosen, rejected = concatenated_logps(model, pairs, 3, CPU, min_saving, share)
        (chosen * weights - rejected * weights.flip(0)).sum().backward()
        results.append(
            (chosen.detach(), rejected.detach(), [p.grad.clone() for p in model.parameters()])
        )
    hook.remove()
    model.set_attn_implementation("sdpa")
    (c0, r0, g0), (c1, r1, g1) = results
    torch.testing.assert_close(c1, c0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1, r0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    assert all(torch.isfinite(g).all() for g in g1)
    if min_saving == 0:
        assert len(passes) == 2  # one padded pass each: 18 rows, then 9 packed rows


@pytest.mark.parametrize("mutant", ["rejected sees chosen", "positions run on"])
def test_plausible_wrong_packings_change_the_log_probs(model, monkeypatch, mutant):
    """What the test above compares must move for these wrong versions of the mask and positions
    (by far more than its tolerance)."""
    pairs = random_pairs(6, seed=2)
    want = torch.stack(concatenated_logps(model, pairs, 3, CPU))
    if mutant == "rejected sees chosen":
        real_mask = sp.attention_mask
        monkeypatch.setattr(
            sp, "attention_mask", lambda s: real_mask(torch.where(s == sp.REJECTED, sp.CHOSEN, s))
        )
    else:
        real_pack = sp.pack_pair

        def pack(p):
            return real_pack(p) | {"position_ids": list(range(len(real_pack(p)["input_ids"])))}

        monkeypatch.setattr(sp, "pack_pair", pack)
    got = torch.stack(concatenated_logps(model, pairs, 3, CPU, share_prompt=True))
    assert (got - want).abs().max() > 1e-2


def test_an_attention_without_custom_masks_is_refused_by_name():
    fake = types.SimpleNamespace(
        config=types.SimpleNamespace(_attn_implementation="flash_attention_2")
    )
    with pytest.raises(ConfigError, match=r"share_prompt.*flash_attention_2"):
        sp.model_mask(fake, torch.ones(1, 1, 2, 2, dtype=torch.bool))

"""The DPO-family losses, their rewards and logged metrics, and the log-prob maths under them.

Each loss is checked twice: on one pair against a hand computation, and on whole batches against
the reference's formulas written element by element in plain floats. A single pair cannot tell a
per-pair loss from a batch mean, chosen/rejected of one pair from another's, or `>` from `>=` when
no rewards tie; the batch properties can.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from amber_repro.data.tokenization import IGNORE_INDEX, collate
from amber_repro.training.logprobs import sequence_logps, sft_loss
from amber_repro.training.losses import preference_loss, reward_metrics

# --- the preference loss on one pair, by hand: sigmoid, label smoothing, IPO, reference-free ------

# One pair: policy log-probs (chosen -1, rejected -3), reference (-2, -5).
PI_C, PI_R, REF_C, REF_R, BETA = -1.0, -3.0, -2.0, -5.0, 0.1
H = (PI_C - PI_R) - (REF_C - REF_R)  # = 2 - 3 = -1


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # -log sigmoid(-x)


def loss_of(**kwargs):
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), beta=BETA, **kwargs)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, softplus(-BETA * H)),  # -log sigmoid(beta h) = log(1 + e^{-beta h})
        ({"label_smoothing": 0.2}, 0.8 * softplus(-BETA * H) + 0.2 * softplus(BETA * H)),
        ({"loss_type": "ipo"}, (H - 1 / (2 * BETA)) ** 2),  # (-1 - 5)^2 = 36
        ({"reference_free": True}, softplus(-BETA * (PI_C - PI_R))),
    ],
    ids=["sigmoid", "conservative", "ipo", "reference-free"],
)
def test_each_loss_variant_matches_hand_computation(kwargs, expected):
    losses, chosen, rejected = loss_of(**kwargs)
    assert losses.item() == pytest.approx(expected, rel=1e-12)
    assert chosen.item() == pytest.approx(BETA * (PI_C - REF_C))  # 0.1
    assert rejected.item() == pytest.approx(BETA * (PI_R - REF_R))  # 0.2


def test_hand_values_are_what_they_claim():
    assert loss_of(loss_type="ipo")[0].item() == pytest.approx(36.0)
    assert loss_of()[0].item() == pytest.approx(math.log(1 + math.exp(0.1)))


def test_unknown_loss_type_is_refused():
    with pytest.raises(ValueError, match="unknown loss_type 'hinge'"):
        loss_of(loss_type="hinge")


# --- the preference loss on whole batches: per-pair loss, gradient and rewards, every variant -----


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return math.exp(log_sigmoid(x))


def reference_pair(pc, pr, rc, rr, beta, loss_type, smoothing, reference_free):
    """One pair's (loss, d loss / d pi_c, chosen reward, rejected reward), from the reference's
    trainers.preference_loss and its derivative by hand."""
    h = (pc - pr) - (0.0 if reference_free else rc - rr)
    if loss_type == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
        grad = 2 * (h - 1 / (2 * beta))
    else:
        loss = -(1 - smoothing) * log_sigmoid(beta * h) - smoothing * log_sigmoid(-beta * h)
        grad = -(1 - smoothing) * beta * sigmoid(-beta * h) + smoothing * beta * sigmoid(beta * h)
    # The rewards use the reference log-probs even when the loss does not (as in the reference).
    return loss, grad, beta * (pc - rc), beta * (pr - rr)


logp = st.floats(-60.0, 0.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    batch=st.lists(st.tuples(logp, logp, logp, logp), min_size=1, max_size=6),
    beta=st.floats(0.01, 2.0),
    loss_type=st.sampled_from(["sigmoid", "ipo"]),
    smoothing=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    reference_free=st.booleans(),
)
@example(
    batch=[(-1.0, -3.0, -2.0, -5.0), (-7.0, -2.0, -6.0, -4.0), (-3.0, -3.0, -1.0, -8.0)],
    beta=0.1,
    loss_type="sigmoid",
    smoothing=0.1,
    reference_free=False,
)
def test_each_pair_gets_its_own_loss_gradient_and_rewards(
    batch, beta, loss_type, smoothing, reference_free
):
    columns = zip(*batch, strict=True)
    pc, pr, rc, rr = (torch.tensor(column, dtype=torch.float64) for column in columns)
    pc.requires_grad_()
    pr.requires_grad_()
    losses, chosen, rejected = preference_loss(
        pc,
        pr,
        rc,
        rr,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=smoothing,
        reference_free=reference_free,
    )
    assert losses.shape == chosen.shape == rejected.shape == (len(batch),)  # per pair, no mean
    assert not chosen.requires_grad and not rejected.requires_grad  # detached
    losses.sum().backward()
    for i, row in enumerate(batch):
        loss, grad, want_chosen, want_rejected = reference_pair(
            *row, beta, loss_type, smoothing, reference_free
        )
        assert losses[i].item() == pytest.approx(loss, rel=1e-9, abs=1e-12)
        assert chosen[i].item() == pytest.approx(want_chosen, rel=1e-9, abs=1e-12)
        assert rejected[i].item() == pytest.approx(want_rejected, rel=1e-9, abs=1e-12)
        # The loss depends on pi_c - pi_r: equal and opposite gradients.
        assert pc.grad[i].item() == pytest.approx(grad, rel=1e-9, abs=1e-12)
        assert pr.grad[i].item() == pytest.approx(-grad, rel=1e-9, abs=1e-12)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.tensor([-4.0], requires_grad=True), torch.tensor([-4.0], requires_grad=True)
    losses, _, _ = preference_loss(pc, pr, torch.tensor([-4.0]), torch.tensor([-4.0]), beta=0.5)
    losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # gradient descent raises pi_c, lowers pi_r


# --- rewards and logged metrics -------------------------------------------------------------------


def test_reward_metrics():
    chosen, rejected = torch.tensor([0.5, -0.1, 0.2]), torch.tensor([0.1, 0.3, -0.4])
    metrics = reward_metrics(chosen, rejected)
    assert metrics["rewards/accuracies"] == pytest.approx(2 / 3)
    assert metrics["rewards/margins"] == pytest.approx((0.4 - 0.4 + 0.6) / 3)
    assert metrics["rewards/chosen"] == pytest.approx(0.2) and metrics[
        "rewards/rejected"
    ] == pytest.approx(0.0)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        # Small integers, so that ties (chosen == rejected) are common.
        st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
        min_size=1,
        max_size=8,
    )
)
@example(pairs=[(0, 0), (1, 0), (0, 1)])  # policy == reference at step 0: rewards tie
def test_reward_metrics_are_the_references_batch_statistics(pairs):
    chosen = torch.tensor([c for c, _ in pairs], dtype=torch.float64)
    rejected = torch.tensor([r for _, r in pairs], dtype=torch.float64)
    metrics = reward_metrics(chosen, rejected)
    n = len(pairs)
    assert metrics == pytest.approx(
        {
            "rewards/chosen": sum(c for c, _ in pairs) / n,
            "rewards/rejected": sum(r for _, r in pairs) / n,
            # Strictly greater: a tie is not an accurate pair.
            "rewards/accuracies": sum(c > r for c, r in pairs) / n,
            "rewards/margins": sum(c - r for c, r in pairs) / n,
        }
    )


# --- sequence log-probs and the SFT loss ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_llama(50)


def slow_logps(model, input_ids: list[int], labels: list[int]) -> float:
    """One forward pass per labelled token on the unpadded prefix: the definition, nothing
    clever."""
    total = 0.0
    for t in range(1, len(input_ids)):
        if labels[t] == IGNORE_INDEX:
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([input_ids[:t]])).logits[0, -1].double()
        total += torch.log_softmax(logits, -1)[input_ids[t]].item()
    return total


def test_sequence_logps_matches_a_per_token_reference_on_a_padded_batch(tiny_model):
    generator = torch.Generator().manual_seed(1)
    sequences = []
    for prompt_len, response_len in [(3, 4), (6, 2), (1, 7)]:
        ids = torch.randint(3, 50, (prompt_len + response_len,), generator=generator).tolist()
        sequences.append(
            {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt_len + ids[prompt_len:]}
        )
    batch = collate(sequences, pad_token_id=0)
    with torch.no_grad():
        logits = tiny_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    fast = sequence_logps(logits, batch["labels"])
    assert fast.shape == (3,)
    for row, s in enumerate(sequences):
        assert fast[row].item() == pytest.approx(
            slow_logps(tiny_model, s["input_ids"], s["labels"]), abs=1e-4
        )
    assert sft_loss(fast).item() == pytest.approx(-fast.mean().item())


def test_masked_tokens_do_not_count():
    logits = torch.randn(1, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, IGNORE_INDEX, 2]])
    expected = logits[0, 1].log_softmax(-1)[3] + logits[0, 3].log_softmax(-1)[2]
    assert sequence_logps(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)

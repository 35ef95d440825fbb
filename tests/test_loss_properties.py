"""The DPO-family losses, rewards and logged metrics on whole batches, against the reference's
formulas written element by element in plain floats.

test_losses.py checks one pair by hand; a single pair cannot tell a per-pair loss from a batch mean,
chosen/rejected of one pair from another's, or `>` from `>=` when no rewards tie.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amber_repro.training.losses import preference_loss, reward_metrics


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

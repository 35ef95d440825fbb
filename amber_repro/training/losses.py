"""The preference losses of the DPO reference (DPO, IPO, conservative, reference-free), as pure
functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo")


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reference_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO-family losses for a batch of pairs, and the implicit rewards.

    Each input: (batch,) summed response log-probs. Returns (losses, chosen_rewards,
    rejected_rewards), each (batch,); the rewards beta * (policy - reference) are detached.
    - sigmoid: -log sigmoid(beta * h) where h = (pi_c - pi_r) - (ref_c - ref_r); with
      label_smoothing e it is conservative DPO:
      -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h).
    - ipo: (h - 1 / (2 beta))^2.
    - reference_free: h = pi_c - pi_r (the reference's log-ratio is taken as 0).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    policy_logratios = policy_chosen - policy_rejected
    reference_logratios = (
        torch.zeros_like(policy_logratios)
        if reference_free
        else reference_chosen - reference_rejected
    )
    h = policy_logratios - reference_logratios
    if loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = (
            -F.logsigmoid(beta * h) * (1 - label_smoothing)
            - F.logsigmoid(-beta * h) * label_smoothing
        )
    chosen_rewards = beta * (policy_chosen - reference_chosen).detach()
    rejected_rewards = beta * (policy_rejected - reference_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def reward_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, float]:
    """The reference's logged reward statistics for a batch of pairs (each input (batch,))."""
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
    }

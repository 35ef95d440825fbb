"""Log-probabilities of labelled tokens: the quantity every stage's loss and metric is built on."""

from __future__ import annotations

import torch

from amber_repro.tokenization import IGNORE_INDEX


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens of each sequence.

    logits: (batch, length, vocab), the model's output for input_ids.
    labels: (batch, length), input_ids with IGNORE_INDEX where nothing is trained (prompt, padding).
    Returns (batch,) float32: sum over t of log p(labels[t] | tokens < t). Token t is predicted by
    the logits at t - 1, hence the shift.
    """
    logits = logits[:, :-1, :].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe_labels.unsqueeze(2)).squeeze(2)
    return (token_logps * mask).sum(-1)


def sft_loss(logps: torch.Tensor) -> torch.Tensor:
    """The reference's SFT loss: mean over examples of the negative SUMMED response log-prob.

    logps: (batch,) from `sequence_logps`. Returns a scalar.
    """
    return -logps.mean()

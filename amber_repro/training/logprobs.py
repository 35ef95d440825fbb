"""Log-probabilities of labelled tokens: the quantity every stage's loss and metric is built on.

`sequence_logps` works through the tokens in chunks, so that the float32 full-vocabulary
intermediates (the log-softmax in the forward pass; its gradient in the backward pass) exist for
one chunk at a time instead of for the whole (batch, length, vocab) batch. Each chunk runs the
same per-row kernels as the plain `logits.float().log_softmax(-1)` + gather, and the per-token
values are summed in one reduction as before, so values and gradients are those of the plain
version (bit for bit on CPU, see tests/test_logprobs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from amber_repro.data.tokenization import IGNORE_INDEX, collate

# Elements (tokens x vocabulary) of one chunk's float32 intermediates: 32 MiB each.
CHUNK_ELEMENTS = 2**23


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk, so that a (tokens, vocab) float32 chunk is CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // vocab)


def _label_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) of each token: logits (n, vocab), labels (n,) valid ids. Returns (n,) float32;
    its float32 log-softmax is (n, vocab): call it per chunk."""
    return logits.float().log_softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1)


class _ChunkedLabelLogps(torch.autograd.Function):
    """Per-token log-probs, chunk by chunk over the (batch x length) tokens. The backward pass
    recomputes each chunk's log-softmax rather than keeping every chunk's float32 intermediates
    alive from forward to backward (plain autograd over chunks would)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        """logits (batch, length, vocab); labels (batch, length - 1) valid ids, labels[:, t]
        scored by logits[:, t]; chunk: tokens per chunk. Returns (batch, length - 1) float32.

        The whole logits come in (not a [:, :-1] view, whose backward would copy the full-size
        gradient into a second one); the last position is scored against a dummy label 0.
        """
        labels = torch.nn.functional.pad(labels, (0, 1))
        # Rows of a contiguous (tokens, vocab) view: a chunk is a view, not a copy.
        flat, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        out = torch.empty(flat_labels.shape, dtype=torch.float32, device=logits.device)
        for start in range(0, flat.shape[0], chunk):
            end = start + chunk
            out[start:end] = _label_logps(flat[start:end], flat_labels[start:end])
        ctx.save_for_backward(logits, labels)
        ctx.chunk = chunk
        return out.view(labels.shape)[:, :-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        """grad_out (batch, length - 1) -> gradient of the logits (batch, length, vocab)."""
        logits, labels = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        flat_labels = labels.reshape(-1)
        flat_grad_out = torch.nn.functional.pad(grad_out, (0, 1)).reshape(-1)
        grad = torch.empty(flat.shape, dtype=logits.dtype, device=logits.device)
        for start in range(0, flat.shape[0], ctx.chunk):
            end = start + ctx.chunk
            with torch.enable_grad():
                piece = flat[start:end].detach().requires_grad_()
                logps = _label_logps(piece, flat_labels[start:end])
            # torch's own backward of the same ops: the plain version's gradient, per chunk.
            (piece_grad,) = torch.autograd.grad(logps, piece, flat_grad_out[start:end])
            grad[start:end] = piece_grad
        grad = grad.view(logits.shape)
        grad[:, -1] = 0  # the last position predicts nothing (exactly 0, even for a NaN logit)
        return grad, None, None


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Log-probability of each labelled token.

    logits: (batch, length, vocab), the model's output for input_ids.
    labels: (batch, length), input_ids with IGNORE_INDEX where nothing is trained (prompt, padding).
    chunk: tokens per chunk (default: `chunk_tokens`); it changes memory, not the result.
    Returns (batch, length - 1) float32: [:, t - 1] is log p(labels[t] | tokens < t), 0 where
    labels[t] is IGNORE_INDEX. Token t is predicted by the logits at t - 1, hence the shift.
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    chunk = chunk or chunk_tokens(logits.shape[2])
    return _ChunkedLabelLogps.apply(logits, safe_labels, chunk) * mask


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens of each sequence: logits (batch,
    length, vocab), labels (batch, length) as for `token_logps`. Returns (batch,) float32."""
    return token_logps(logits, labels, chunk).sum(-1)


def length_groups(lengths: Sequence[int], min_saving: int) -> list[list[int]]:
    """Indices of `lengths` (sequence lengths) in groups, each to be padded to its own longest
    and run as one forward pass: the grouping with the fewest padded tokens, counting each pass
    as `min_saving` tokens, so a split is made only where it saves more padding than that.
    min_saving 0: one group (no splitting).

    The groups are runs of the indices sorted by length (for sorted lengths an optimal grouping
    is always contiguous), found by dynamic programming over the n + 1 cut points: O(n^2).
    Returns the groups, shortest first, together covering each index once; a single group keeps
    the given order.
    """
    if min_saving <= 0 or len(lengths) < 2:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    # cost[j]: fewest padded tokens (+ min_saving per group) for the first j sorted sequences.
    cost, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        cost[j], cut[j] = min((cost[i] + min_saving + (j - i) * longest, i) for i in range(j))
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1] if len(groups) > 1 else [list(range(len(lengths)))]


def padded_logps(
    model, sequences: list[dict[str, list[int]]], pad_token_id: int, device: torch.device
) -> torch.Tensor:
    """`sequence_logps` of tokenized sequences ({"input_ids", "labels"} lists), right-padded
    into one (len(sequences), longest) batch and run in one forward pass. Returns (n,)."""
    batch = {k: v.to(device) for k, v in collate(sequences, pad_token_id).items()}
    # use_cache=False: a one-pass score needs no key/value cache for a next token.
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    return sequence_logps(logits, batch["labels"])


def batch_logps(
    model,
    sequences: list[dict[str, list[int]]],
    pad_token_id: int,
    device: torch.device,
    min_saving: int = 0,
) -> torch.Tensor:
    """`sequence_logps` of tokenized sequences, in the given order: (n,).

    min_saving 0: one padded forward pass (the reference implementation's). Otherwise the
    sequences run in `length_groups`, one padded pass each, which computes the same values (up
    to float rounding: the matrix products see other shapes) with less padding: worth it where
    cost follows padded tokens (CPU; see docs/measurements.md), not for a small model on a GPU.
    Every process of a sharded model must run the same passes: callers pass 0 there.
    """
    return in_length_groups(
        lambda part: padded_logps(model, part, pad_token_id, device),
        sequences,
        [len(s["input_ids"]) for s in sequences],
        min_saving,
    )


def in_length_groups(
    run: Callable[[list], torch.Tensor], items: Sequence, lengths: Sequence[int], min_saving: int
) -> torch.Tensor:
    """run(items) (a tensor with one row per item), computed as one call per `length_groups`
    group of the items and put back in the order of `items`."""
    groups = length_groups(lengths, min_saving)
    if len(groups) == 1:
        return run(list(items))
    parts = [run([items[i] for i in g]) for g in groups]
    merged = torch.cat(parts)
    order = torch.tensor([i for g in groups for i in g], device=merged.device)
    return merged[torch.argsort(order)]


def sft_loss(logps: torch.Tensor) -> torch.Tensor:
    """The reference's SFT loss: mean over examples of the negative SUMMED response log-prob.

    logps: (batch,) from `sequence_logps`. Returns a scalar.
    """
    return -logps.mean()

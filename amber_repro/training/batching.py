"""Batches of sequences by length under a token budget, for forward-only passes (pure functions).

A right-padded batch costs rows x its longest row in compute and memory. Sorting by length puts
sequences of similar length together, so little of that is padding; a budget of padded tokens
rather than a fixed row count keeps every batch's size (and peak memory) that of the largest.
"""

from __future__ import annotations

from collections.abc import Sequence


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices by decreasing length; equal lengths keep their order (deterministic)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of `lengths` cut into batches, longest first, each padded to at most max_tokens.

    A batch's padded size is len(batch) x its longest length. Every index is in exactly one batch;
    an item longer than max_tokens on its own gets a batch of its own. The first batch is the
    largest in padded length, so an out-of-memory failure comes at once rather than at the end.
    """
    batches: list[list[int]] = []
    for i in longest_first(lengths):
        # Longest first: the batch's first item sets its padded length.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padded_tokens(lengths: Sequence[int], batches: list[list[int]]) -> int:
    """Tokens the batches hold once right-padded: sum of len(batch) x its longest length."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)

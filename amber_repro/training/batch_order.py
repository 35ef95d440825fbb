"""Which examples make each optimizer step, and which held-out examples an evaluation scores (pure
functions of the data's layout and the seed).

Two orders (`shuffle` of SFT and DPO):
- "prompts", the recipe's: the DPO reference's `get_batch_iterator` (preference_datasets.py at
  f8b8c0f). Each epoch shuffles the list of prompts in place, then yields each prompt's examples one
  after another (a PKU-SafeRLHF prompt has several pairs; in SFT one target), cutting the stream
  into batches across prompts; an epoch's last partial batch is dropped. Its random numbers are
  reproduced exactly: numpy's legacy generator seeded with the seed draws one million permutation
  seeds, and epoch e seeds Python's `random` with the e-th and calls `random.shuffle`. Given the
  same prompts in the same order, the batches are the reference's.
- "examples": each example on its own, shuffled each epoch by torch.randperm from (seed, epoch).

Either order depends only on (seed, epoch), so a resumed run continues with exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch

from amber_repro.errors import ConfigError

# The reference draws this many permutation seeds up front (np.random.randint(0, 2**32, size=...)).
REFERENCE_SEEDS = 1_000_000


def prompt_groups(prompts: Sequence[Hashable]) -> list[list[int]]:
    """Example indices grouped by prompt, prompts in order of first appearance and each group in
    example order: the reference's dict of prompts (get_saferlhf fills it row by row)."""
    groups: dict[Hashable, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(index)
    return list(groups.values())


def reference_epoch_orders(n_items: int, seed: int) -> Iterator[list[int]]:
    """The order of items 0..n-1 after each epoch's shuffle, epoch after epoch, as the reference's
    iterator shuffles its list: in place, so each epoch shuffles the previous epoch's order."""
    permutation_seeds = np.random.RandomState(seed).randint(0, 2**32, size=REFERENCE_SEEDS)
    shuffler, order = random.Random(), list(range(n_items))
    for permutation_seed in permutation_seeds:
        # The reference passes a numpy integer, which Python <= 3.10 hashed to the same int.
        shuffler.seed(int(permutation_seed))
        shuffler.shuffle(order)
        yield list(order)


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return n_examples // batch_size  # the last partial batch is dropped, as in the reference


def _check_one_batch(n_examples: int, batch_size: int) -> int:
    per_epoch = steps_per_epoch(n_examples, batch_size)
    if per_epoch == 0:
        raise ConfigError(f"{n_examples} examples make no full batch of {batch_size}")
    return per_epoch


def grouped_batches(
    groups: list[list[int]], batch_size: int, seed: int, n_epochs: int, start_step: int = 0
) -> Iterator[tuple[int, list[int]]]:
    """(optimizer step, example indices) in the reference's order: `groups` (from prompt_groups)
    shuffled each epoch, their examples one after another, full batches only."""
    per_epoch = _check_one_batch(sum(map(len, groups)), batch_size)
    orders = reference_epoch_orders(len(groups), seed)
    for epoch, order in zip(range(n_epochs), orders, strict=False):  # orders never ends
        if (epoch + 1) * per_epoch <= start_step:
            continue  # drawn all the same: the next epoch shuffles this one's order
        stream = [index for group in order for index in groups[group]]
        for index in range(per_epoch):
            step = epoch * per_epoch + index
            if step >= start_step:
                yield step, stream[index * batch_size : (index + 1) * batch_size]


def example_batches(
    n_examples: int, batch_size: int, seed: int, n_epochs: int, start_step: int = 0
) -> Iterator[tuple[int, list[int]]]:
    """(optimizer step, example indices) with each example shuffled on its own, each epoch by
    torch.randperm from (seed, epoch); full batches only."""
    per_epoch = _check_one_batch(n_examples, batch_size)
    for epoch in range(start_step // per_epoch, n_epochs):
        order = torch.randperm(
            n_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        ).tolist()
        for index in range(per_epoch):
            step = epoch * per_epoch + index
            if step >= start_step:
                yield step, order[index * batch_size : (index + 1) * batch_size]


def training_batches(
    shuffle: str,
    groups: list[list[int]],
    batch_size: int,
    seed: int,
    n_epochs: int,
    start_step: int = 0,
) -> Iterator[tuple[int, list[int]]]:
    """The batches of `shuffle` "prompts" (the reference's) or "examples"."""
    if shuffle == "prompts":
        return grouped_batches(groups, batch_size, seed, n_epochs, start_step)
    n_examples = sum(map(len, groups))
    return example_batches(n_examples, batch_size, seed, n_epochs, start_step)


def evaluation_sample(
    groups: list[list[int]], n_examples: int, batch_size: int, seed: int
) -> list[int]:
    """The held-out examples an evaluation scores, as the reference's eval iterator draws them
    (n_examples, no epoch limit): its order, in full batches, until the examples it has taken
    (those of an epoch's dropped partial batch included) reach n_examples. So the count is rounded
    up to whole batches, and a split smaller than that is gone through again, reshuffled. A split
    with fewer examples than one batch is scored whole, once (the reference would wait forever)."""
    if sum(map(len, groups)) < batch_size:
        order = next(reference_epoch_orders(len(groups), seed)) if groups else []
        return [index for group in order for index in groups[group]]
    sample, taken = [], 0
    for order in reference_epoch_orders(len(groups), seed):
        batch = []
        for index in (index for group in order for index in groups[group]):
            batch.append(index)
            taken += 1
            if len(batch) == batch_size:
                sample += batch
                batch = []
                if taken >= n_examples:
                    return sample
    raise AssertionError("unreachable: every epoch adds at least one full batch")


def evaluation_steps(eval_every: int, batch_size: int) -> int:
    """Optimizer steps between held-out evaluations: the reference counts examples and first rounds
    eval_every down to a multiple of batch_size (train.py)."""
    if eval_every < batch_size:
        raise ConfigError(
            f"eval_every {eval_every} training examples is below batch_size {batch_size}: "
            "evaluations come between optimizer steps"
        )
    return eval_every // batch_size


def evaluates_before(step: int, every_steps: int, first: bool) -> bool:
    """Whether the reference evaluates before training optimizer step `step` (0-based): when the
    examples seen so far are a multiple of eval_every, step 0 only with do_first_eval."""
    return step % every_steps == 0 and (step > 0 or first)

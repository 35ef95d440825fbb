"""The training loop's pure parts against the reference's rules: the learning-rate warmup, the
epoch's batches of `shuffle: examples` (reshuffled per epoch from the seed, last partial batch
dropped, resumable) and the split of a global batch into micro-batches over processes. The
reference's own order (`shuffle: prompts`) is in test_batch_order.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amber_repro.training.batch_order import example_batches as global_batches
from amber_repro.training.batch_order import steps_per_epoch
from amber_repro.training.runtime import Processes
from amber_repro.training.schedule import build_optimizer, build_scheduler, micro_batches

CPU = torch.device("cpu")


def learning_rates(lr: float, warmup_steps: int, steps: int) -> list[float]:
    """The learning rate each of the first `steps` optimizer steps runs with."""
    optimizer = build_optimizer(torch.nn.Linear(1, 1), lr)
    scheduler = build_scheduler(optimizer, warmup_steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_recipe_warmup_reaches_the_full_rate_at_step_150():
    """The reference: LambdaLR(min(1, (step + 1) / (warmup_steps + 1))), warmup 150, so the first
    update uses lr / 151, update 149 uses 150/151 of it, and every update from 150 on the full
    rate."""
    rates = learning_rates(5e-7, 150, 153)
    assert rates[0] == pytest.approx(5e-7 / 151, rel=1e-12)
    assert rates[1] == pytest.approx(5e-7 * 2 / 151, rel=1e-12)
    assert rates[149] == pytest.approx(5e-7 * 150 / 151, rel=1e-12)
    assert rates[149] < 5e-7
    assert rates[150:] == [pytest.approx(5e-7, rel=1e-12)] * 3


@settings(max_examples=30, deadline=None)
@given(warmup=st.integers(0, 12), lr=st.floats(1e-7, 1e-2))
@example(warmup=0, lr=1e-3)  # no warmup: the full rate from the first step
def test_warmup_is_linear_then_constant(warmup, lr):
    rates = learning_rates(lr, warmup, warmup + 4)
    want = [lr * min(1.0, (step + 1) / (warmup + 1)) for step in range(warmup + 4)]
    assert rates == pytest.approx(want, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    n_epochs=st.integers(1, 3),
    seed=st.integers(0, 2**20),
)
@example(n=10, batch_size=4, n_epochs=2, seed=0)  # 2 full batches, 2 examples dropped per epoch
def test_each_epoch_has_only_full_batches_of_distinct_examples(n, batch_size, n_epochs, seed):
    per_epoch = n // batch_size
    assert steps_per_epoch(n, batch_size) == per_epoch
    if per_epoch == 0:
        with pytest.raises(ValueError, match="make no full batch"):
            list(global_batches(n, batch_size, seed, n_epochs))
        return
    batches = list(global_batches(n, batch_size, seed, n_epochs))
    assert [step for step, _ in batches] == list(range(per_epoch * n_epochs))
    for epoch in range(n_epochs):
        epoch_batches = [b for _, b in batches[epoch * per_epoch : (epoch + 1) * per_epoch]]
        assert all(len(b) == batch_size for b in epoch_batches)
        seen = [i for b in epoch_batches for i in b]
        assert len(set(seen)) == len(seen) == per_epoch * batch_size
        assert set(seen) <= set(range(n))
    assert batches == list(global_batches(n, batch_size, seed, n_epochs))  # from the seed alone


def test_every_epoch_is_shuffled_anew_and_the_seed_matters():
    def epoch_orders(seed: int) -> list[list[int]]:
        batches = [b for _, b in global_batches(12, 12, seed, 3)]  # one batch = one epoch
        return batches

    orders = epoch_orders(0)
    assert len({tuple(o) for o in orders}) == 3  # each epoch its own order
    assert all(sorted(o) == list(range(12)) for o in orders)
    assert orders != sorted(orders[0])  # shuffled, not 0..11
    assert epoch_orders(1) != orders


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(4, 30),
    batch_size=st.integers(1, 4),
    n_epochs=st.integers(1, 3),
    data=st.data(),
)
def test_a_resumed_run_sees_exactly_the_rest_of_the_batches(n, batch_size, n_epochs, data):
    whole = list(global_batches(n, batch_size, 7, n_epochs))
    start = data.draw(st.integers(0, len(whole)), label="start_step")
    assert list(global_batches(n, batch_size, 7, n_epochs, start_step=start)) == whole[start:]


@settings(max_examples=100, deadline=None)
@given(micro=st.integers(1, 4), accumulation=st.integers(1, 4), world=st.integers(1, 4))
@example(micro=1, accumulation=4, world=8)  # the recipe's DPO: 32 pairs on 8 GPUs
def test_processes_split_a_global_batch_into_equal_micro_batches(micro, accumulation, world):
    """batch = micro x accumulation x processes (the reference's global batch): each process gets
    `accumulation` micro-batches of `micro` examples, and together they hold the batch once."""
    indices = list(range(100, 100 + micro * accumulation * world))
    hands = [micro_batches(indices, micro, Processes(r, world, CPU)) for r in range(world)]
    for hand in hands:
        assert len(hand) == accumulation and all(len(m) == micro for m in hand)
    assert sorted(i for hand in hands for m in hand for i in m) == indices

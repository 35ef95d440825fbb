"""The recipe's batch order and held-out sample against a port of the DPO reference's iterator.

`reference_batches` below is written from the reference's preference_datasets.py (f8b8c0f,
get_saferlhf as LLM360 wrote it, and get_batch_iterator) and trainers.py, loop for loop, with its
global random state; it never calls the code under test. Our functions must give the same examples
in the same batches, for data with repeated prompts, over several epochs, for the held-out sample
(which cycles through a small split again), and the same evaluation steps.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amber_repro.training.batch_order import (
    evaluates_before,
    evaluation_sample,
    evaluation_steps,
    grouped_batches,
    prompt_groups,
    training_batches,
)


class TemporarilySeededRandom:
    """The reference's utils.TemporarilySeededRandom."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        self.state, self.np_state = random.getstate(), np.random.get_state()
        # Python <= 3.10 hashed the numpy integer the reference passes; int() is the same value.
        random.seed(int(self.seed))
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        random.setstate(self.state)
        np.random.set_state(self.np_state)


def get_saferlhf(rows: list[tuple[str, int]]) -> dict:
    """LLM360's get_saferlhf on filtered rows (prompt, row id): a dict of prompts in their
    first-appearance order, each with its pairs (as responses n, n + 1) in row order."""
    data = defaultdict(lambda: defaultdict(list))
    for prompt, row in rows:
        n_responses = len(data[prompt]["responses"])
        data[prompt]["pairs"].append((n_responses, n_responses + 1))
        data[prompt]["responses"].extend([("chosen", row), ("rejected", row)])
    return data


def reference_batches(rows, batch_size, seed, n_epochs=None, n_examples=None):
    """get_batch_iterator(shuffle=True, sft_mode=False): each batch as the row ids of its pairs."""
    with TemporarilySeededRandom(seed):
        permutation_seeds = iter(np.random.randint(0, 2**32, size=1000000))
        flat_data = [(p, d["responses"], d["pairs"]) for p, d in get_saferlhf(rows).items()]
    epoch_idx, example_idx, done = 0, 0, False
    while True:
        if n_epochs is not None and epoch_idx >= n_epochs:
            break
        with TemporarilySeededRandom(next(permutation_seeds)):
            random.shuffle(flat_data)
        batch = []
        for _prompt, responses, pairs in flat_data:
            if done:
                break
            for p in pairs:
                if done:
                    break
                batch.append(responses[p[0]][1])
                example_idx += 1
                if len(batch) == batch_size:
                    yield batch
                    if n_examples is not None and example_idx >= n_examples:
                        done = True
                    batch = []
        if done:
            break
        epoch_idx += 1


def reference_evaluation_counters(n_steps, batch_size, eval_every, do_first_eval):
    """trainers.py: train.py rounds eval_every down to a multiple of batch_size, then the trainer
    evaluates before a batch when the examples seen are a multiple of it."""
    if eval_every % batch_size != 0:
        eval_every = eval_every - eval_every % batch_size
    evaluated, example_counter = [], 0
    for _ in range(n_steps):
        if example_counter % eval_every == 0 and (example_counter > 0 or do_first_eval):
            evaluated.append(example_counter)
        example_counter += batch_size
    return evaluated


# Rows with repeated prompts, the way PKU-SafeRLHF has them: (prompt, row id), row ids 0..n-1.
rows_strategy = st.lists(st.integers(0, 7), min_size=1, max_size=40).map(
    lambda prompts: [(f"prompt {p}", row) for row, p in enumerate(prompts)]
)


def ours(rows, batch_size, seed, n_epochs):
    groups = prompt_groups([prompt for prompt, _ in rows])
    return [[rows[i][1] for i in b] for _, b in grouped_batches(groups, batch_size, seed, n_epochs)]


def test_a_hand_made_case_with_repeated_prompts():
    rows = [("a", 0), ("b", 1), ("a", 2), ("c", 3), ("b", 4), ("a", 5), ("d", 6)]
    assert prompt_groups([p for p, _ in rows]) == [[0, 2, 5], [1, 4], [3], [6]]
    want = list(reference_batches(rows, 2, 0, n_epochs=3))
    assert ours(rows, 2, 0, 3) == want
    # A prompt's pairs stay together: within an epoch the row ids of a prompt are consecutive.
    for epoch in range(3):
        stream = [r for batch in want[epoch * 3 : epoch * 3 + 3] for r in batch]
        for prompt in "abc":
            positions = [stream.index(r) for p, r in rows if p == prompt and r in stream]
            assert positions == list(range(positions[0], positions[0] + len(positions)))


@settings(max_examples=150, deadline=None)
@given(
    rows=rows_strategy,
    batch_size=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    n_epochs=st.integers(1, 4),
)
@example(rows=[(f"p{i % 3}", i) for i in range(10)], batch_size=4, n_epochs=3, seed=0)
def test_training_batches_are_the_reference_iterators(rows, batch_size, seed, n_epochs):
    if len(rows) < batch_size:
        return  # no full batch: ours refuses (below), the reference yields nothing
    assert ours(rows, batch_size, seed, n_epochs) == list(
        reference_batches(rows, batch_size, seed, n_epochs=n_epochs)
    )


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, batch_size=st.integers(1, 4), n_epochs=st.integers(1, 3), data=st.data())
def test_a_resumed_run_sees_exactly_the_rest_of_the_reference_batches(
    rows, batch_size, n_epochs, data
):
    if len(rows) < batch_size:
        return
    groups = prompt_groups([p for p, _ in rows])
    whole = list(grouped_batches(groups, batch_size, 3, n_epochs))
    start = data.draw(st.integers(0, len(whole)), label="start_step")
    assert list(grouped_batches(groups, batch_size, 3, n_epochs, start_step=start)) == whole[start:]


def test_the_setting_chooses_the_order():
    rows = [(f"p{i % 5}", i) for i in range(40)]  # row id = example index
    groups = prompt_groups([p for p, _ in rows])
    prompts = [b for _, b in training_batches("prompts", groups, 8, 0, 2)]
    examples = [b for _, b in training_batches("examples", groups, 8, 0, 2)]
    assert prompts == list(reference_batches(rows, 8, 0, n_epochs=2))
    assert prompts != examples
    assert sorted(i for b in examples[:5] for i in b) == list(range(40))


@settings(max_examples=150, deadline=None)
@given(
    rows=rows_strategy,
    n_examples=st.integers(1, 30),
    batch_size=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
@example(rows=[(f"p{i % 4}", i) for i in range(7)], n_examples=16, batch_size=4, seed=0)
def test_the_held_out_sample_is_the_reference_eval_iterators(rows, n_examples, batch_size, seed):
    """n_eval_examples drawn as the reference's eval iterator draws them: rounded up to whole
    batches, cycling (reshuffled) through a split smaller than that, counting the examples of each
    epoch's dropped partial batch towards n_examples."""
    if len(rows) < batch_size:
        return
    groups = prompt_groups([p for p, _ in rows])
    sample = evaluation_sample(groups, n_examples, batch_size, seed)
    want = [r for b in reference_batches(rows, batch_size, seed, n_examples=n_examples) for r in b]
    assert [rows[i][1] for i in sample] == want


def test_a_split_smaller_than_one_batch_is_scored_whole_once():
    groups = prompt_groups(["a", "b", "a"])
    assert sorted(evaluation_sample(groups, 256, 32, 0)) == [0, 1, 2]
    assert evaluation_sample([], 256, 32, 0) == []


@settings(max_examples=100, deadline=None)
@given(
    batch_size=st.integers(1, 64),
    eval_every=st.integers(1, 500),
    do_first_eval=st.booleans(),
    n_steps=st.integers(1, 60),
)
@example(batch_size=64, eval_every=20_000, do_first_eval=True, n_steps=700)  # SFT: every 312
@example(batch_size=32, eval_every=20_000, do_first_eval=True, n_steps=700)  # DPO: every 625
def test_evaluations_come_at_the_reference_steps(batch_size, eval_every, do_first_eval, n_steps):
    if eval_every < batch_size:
        return  # refused by the settings (settings.batch_conflicts)
    every = evaluation_steps(eval_every, batch_size)
    ours_at = [
        step * batch_size for step in range(n_steps) if evaluates_before(step, every, do_first_eval)
    ]
    assert ours_at == reference_evaluation_counters(n_steps, batch_size, eval_every, do_first_eval)


def test_the_recipe_evaluates_sft_every_312_and_dpo_every_625_steps():
    assert evaluation_steps(20_000, 64) == 312  # 19,968 examples, as train.py rounds it
    assert evaluation_steps(20_000, 32) == 625


def test_evaluations_less_often_than_every_step_are_refused():
    with pytest.raises(ValueError, match="eval_every 4 training examples is below batch_size 8"):
        evaluation_steps(4, 8)


def test_a_batch_too_large_for_the_data_is_refused():
    with pytest.raises(ValueError, match="3 examples make no full batch of 4"):
        list(grouped_batches([[0, 1], [2]], 4, 0, 1))

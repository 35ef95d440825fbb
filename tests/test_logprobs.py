"""Chunked log-probs and the reference pass's length-sorted, token-budgeted batching: the same
numbers as the plain code, in the same row order."""

from __future__ import annotations

import threading

import polars as pl
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from amber_repro.data.tokenization import IGNORE_INDEX, Limits
from amber_repro.training import distributed, logprobs, ref_logps
from amber_repro.training.batching import longest_first, token_budget_batches
from amber_repro.training.logprobs import sequence_logps
from amber_repro.training.runtime import Processes

CPU = torch.device("cpu")


def plain_sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The straightforward version: a float32 log-softmax of the whole batch, then gather."""
    logits, labels = logits[:, :-1, :].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    return (torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(2)).squeeze(2) * mask).sum(-1)


# --- sequence_logps: chunked == plain ------------------------------------------------------------


def logits_and_labels(batch, length, vocab, masked, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, length, vocab, generator=generator) * 4).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[torch.rand(batch, length, generator=generator) < masked] = IGNORE_INDEX
    labels[0] = IGNORE_INDEX if masked == 1.0 else labels[0]
    return logits, labels


def values_and_gradients(fn, logits, labels, weights, **kwargs):
    leaf = logits.clone().requires_grad_()
    values = fn(leaf, labels, **kwargs)
    (values * weights).sum().backward()
    return values.detach(), leaf.grad


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 12),
    vocab=st.integers(2, 40),
    chunk=st.integers(1, 30),
    masked=st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
@example(batch=2, length=1, vocab=5, chunk=1, masked=0.0, dtype=torch.float32, seed=0)
@example(batch=3, length=7, vocab=9, chunk=4, masked=1.0, dtype=torch.float32, seed=1)
@example(batch=2, length=9, vocab=9, chunk=5, masked=0.3, dtype=torch.bfloat16, seed=2)
def test_chunked_sequence_logps_is_the_plain_version_bit_for_bit(
    batch, length, vocab, chunk, masked, dtype, seed
):
    """Values AND gradients, for any chunk size (dividing batch x length or not), length 1 (no
    label at all), fully masked rows (0 with a zero gradient) and bf16 logits.

    Tolerance: none. Every chunk runs the same row-wise kernels (float32 log-softmax, gather, and
    torch's own backward of them) on the same rows, and the per-token values are summed in one
    reduction over the same (batch, length - 1) tensor, so no float32 sum is reordered: on CPU the
    results are bit-identical (so measured). A tolerance, even one ulp, would let a reordered
    summation (per-chunk sums added up, say) pass unnoticed.
    """
    logits, labels = logits_and_labels(batch, length, vocab, masked, dtype, seed)
    weights = torch.randn(batch, generator=torch.Generator().manual_seed(seed))
    want, want_grad = values_and_gradients(plain_sequence_logps, logits, labels, weights)
    got, got_grad = values_and_gradients(sequence_logps, logits, labels, weights, chunk=chunk)
    assert got.dtype == torch.float32 and got.shape == (batch,)
    assert torch.equal(got, want)
    assert got_grad.dtype == dtype and torch.equal(got_grad, want_grad)
    if masked == 1.0:
        assert torch.equal(got[0], torch.tensor(0.0)) and not got_grad[0].any()


def saved_bytes_beside(logits: torch.Tensor, fn, labels: torch.Tensor) -> int:
    """Bytes that autograd keeps for backward, not counting the logits' own storage."""
    kept = []

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr():
            kept.append(tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(logits, labels)
    return sum(kept)


def test_no_full_vocabulary_float32_copy_is_kept_for_backward():
    """The plain version keeps a float32 (batch, length - 1, vocab) log-softmax from forward to
    backward; the chunked one keeps only the logits themselves and the (batch, length) labels."""
    logits, labels = logits_and_labels(2, 64, 500, 0.3, torch.bfloat16, 0)
    logits.requires_grad_()
    full_float32 = 2 * 63 * 500 * 4
    assert saved_bytes_beside(logits, plain_sequence_logps, labels) >= full_float32
    assert saved_bytes_beside(logits, sequence_logps, labels) < 2 * 64 * 8 * 4


# --- batching: lengths -> batches under a token budget -------------------------------------------


def plain_budget_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """The definition, written plainly: longest first (ties by index), a batch grows while its
    rows x longest row stays within the budget; a lone item may exceed it."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        candidate = batches[-1] + [i] if batches else [i]
        if batches and len(candidate) * max(lengths[j] for j in candidate) <= max_tokens:
            batches[-1] = candidate
        else:
            batches.append([i])
    return batches


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 600), max_size=60),
    max_tokens=st.integers(1, 4000),
)
@example(lengths=[5, 5, 5, 5], max_tokens=10)  # exactly the budget: 2 rows of 5
@example(lengths=[700, 3, 3], max_tokens=600)  # over budget alone: its own batch
def test_token_budget_batches_cover_every_index_once_within_the_budget(lengths, max_tokens):
    batches = token_budget_batches(lengths, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)  # longest first: an OOM comes at once
    assert batches == token_budget_batches(list(lengths), max_tokens)  # deterministic
    assert batches == plain_budget_batches(lengths, max_tokens)


@given(lengths=st.lists(st.integers(1, 50), max_size=40), world=st.integers(1, 5))
def test_dealing_gives_each_pair_to_one_process_and_balances_them(lengths, world):
    hands = [ref_logps.deal(lengths, rank, world) for rank in range(world)]
    assert sorted(i for hand in hands for i in hand) == list(range(len(lengths)))
    assert max(map(len, hands)) - min(map(len, hands)) <= 1
    assert hands[0] == longest_first(lengths)[::world]


# --- the reference pass: same log-probs per source_row, rows in pair order -----------------------


class CharTokenizer:
    """One token per character: enough for tokenize_pair (ids 4.., EOS 2, pad 3)."""

    eos_token_id, pad_token_id = 2, 3

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict:
        if isinstance(text, list):  # a batch, as a Hugging Face tokenizer takes one
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        return {"input_ids": [4 + ord(c) % 40 for c in text]}


@pytest.fixture(scope="module")
def model():
    return tiny_llama(44)


def pairs_frame(n: int = 23) -> pl.DataFrame:
    """Pairs of many lengths in no length order, with source_rows in no order either."""
    generator = torch.Generator().manual_seed(5)

    def text() -> str:
        width, repeats = torch.randint(1, 11, (2,), generator=generator).tolist()
        return "abcdefghij"[:width] * (1 + repeats % 4)

    rows = torch.randperm(1000, generator=generator)[:n].tolist()
    return pl.DataFrame(
        {
            "source_row": rows,
            "prompt": [text() for _ in rows],
            "chosen": [text() for _ in rows],
            "rejected": [text() for _ in rows],
        }
    )


def straightforward_pass(model, pairs: pl.DataFrame, limits: Limits) -> pl.DataFrame:
    """File order, each sequence alone (no padding), the plain log-softmax."""
    from amber_repro.training.pairs import tokenize_pairs

    values = {"chosen": [], "rejected": []}
    with torch.no_grad():
        for pair in tokenize_pairs(CharTokenizer(), pairs, limits):
            for side, out in values.items():
                ids = torch.tensor([pair[side]["input_ids"]])
                logits = model(input_ids=ids).logits
                out.append(plain_sequence_logps(logits, torch.tensor([pair[side]["labels"]])))
    return pl.DataFrame(
        {
            "source_row": pairs["source_row"],
            "reference_chosen_logps": torch.cat(values["chosen"]).double().numpy(),
            "reference_rejected_logps": torch.cat(values["rejected"]).double().numpy(),
        }
    )


def assert_same_logps(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Rows in the same order (source_row for source_row), values within float32 tolerance.

    Tolerance: relative 1e-5. Padding and batch size change the shapes of the model's matrix
    products, hence the summation order inside them and the last bits of the logits, so the
    summed log-probs can differ by a float32 ulp or two. Measured on CPU: here at most 7e-8
    relative (most rows bit-identical); on the embedded model's 560 held-out sequences at most
    2e-7 (3e-5 absolute). A row in the wrong place or an off-by-one shift moves a value by far
    more.
    """
    assert got["source_row"].to_list() == want["source_row"].to_list()
    for column in ("reference_chosen_logps", "reference_rejected_logps"):
        torch.testing.assert_close(
            got[column].to_torch(), want[column].to_torch(), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("share_prompt", [False, True])
@pytest.mark.parametrize("max_tokens", [1, 40, 200, 10_000])
def test_reference_pass_matches_the_straightforward_pass_in_pair_order(
    model, max_tokens, share_prompt
):
    pairs, limits = pairs_frame(), Limits(24, 10)
    frame, counts = ref_logps.compute(
        model, CharTokenizer(), pairs, limits, max_tokens, Processes(0, 1, CPU), share_prompt
    )
    assert counts == [pairs.height]
    assert_same_logps(frame, straightforward_pass(model, pairs, limits))


def lengths_of(
    pairs: pl.DataFrame, limits: Limits, rank: int, world: int, share_prompt: bool
) -> list[int]:
    """The lengths of one process's units (sequences, or packed pairs with share_prompt)."""
    from amber_repro.training.pairs import tokenize_pairs

    tokenized = tokenize_pairs(CharTokenizer(), pairs, limits)
    units_of = ref_logps.pair_packed_row if share_prompt else ref_logps.pair_sequences
    units = [units_of(p) for p in tokenized]
    hand = ref_logps.deal([ref_logps.longest(u) for u in units], rank, world)
    return [len(u["input_ids"]) for i in hand for u in units[i]]


class FakeGroup:
    """`distributed.gather` across threads, one thread per simulated process."""

    def __init__(self, world: int):
        self.world, self.local = world, threading.local()
        self.barrier, self.slots = threading.Barrier(world), [None] * world

    def gather(self, obj) -> list:
        self.slots[self.local.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class CountingModel:
    """Counts the forward passes of each simulated process."""

    def __init__(self, model, group: FakeGroup):
        self.model, self.group, self.passes = model, group, {}
        self.config = model.config  # read by shared_prompt.model_mask

    def __call__(self, **inputs):
        rank = self.group.local.rank
        self.passes[rank] = self.passes.get(rank, 0) + 1
        return self.model(**inputs)


@pytest.mark.parametrize(
    "world, max_tokens, share_prompt", [(2, 1, False), (3, 60, False), (3, 60, True)]
)
def test_processes_each_score_their_own_pairs_in_equal_numbers_of_passes(
    model, monkeypatch, world, max_tokens, share_prompt
):
    pairs, limits = pairs_frame(), Limits(24, 10)
    group = FakeGroup(world)
    monkeypatch.setattr(distributed, "gather", group.gather)
    counting, results = CountingModel(model, group), {}

    def process(rank: int) -> None:
        group.local.rank = rank
        procs = Processes(rank, world, CPU)
        results[rank] = ref_logps.compute(
            counting, CharTokenizer(), pairs, limits, max_tokens, procs, share_prompt
        )

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(counting.passes.values())) == 1 and len(counting.passes) == world
    own_batches = {
        len(token_budget_batches(lengths_of(pairs, limits, r, world, share_prompt), max_tokens))
        for r in range(world)
    }
    assert len(own_batches) > 1  # so some process ran stand-in passes
    frame, counts = results[0]
    assert sum(counts) == pairs.height and max(counts) - min(counts) <= 1
    assert_same_logps(frame, straightforward_pass(model, pairs, limits))


def plain_groups_cost(lengths, groups, min_saving):
    return sum(len(g) * max(lengths[i] for i in g) for g in groups) + min_saving * (len(groups) - 1)


def all_partitions(items):
    """Every partition of `items` into non-empty groups (a plain reference for small n)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in all_partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=7),
    min_saving=st.integers(0, 60),
)
def test_length_groups_is_the_cheapest_of_all_groupings(lengths, min_saving):
    """Against every partition (not only runs of the sorted order): the dynamic programme's
    grouping covers each index once and costs no more than any grouping there is."""
    groups = logprobs.length_groups(lengths, min_saving)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    if min_saving == 0:
        assert groups == [list(range(len(lengths)))]
        return
    best = min(
        plain_groups_cost(lengths, p, min_saving) for p in all_partitions(list(range(len(lengths))))
    )
    assert plain_groups_cost(lengths, groups, min_saving) == best


def test_length_groups_splits_only_where_the_saving_reaches_the_threshold():
    # Two short and two long: one pass pads 4 x 50 = 200 tokens, two pay 2 x 2 + 2 x 50 = 104.
    lengths = [50, 2, 50, 2]
    assert logprobs.length_groups(lengths, 95) == [[1, 3], [0, 2]]  # saves 96 > 95: split
    assert logprobs.length_groups(lengths, 96) == [[0, 1, 2, 3]]  # saves only 96: one pass


def test_grouped_forward_passes_give_the_padded_pass_values_and_gradients():
    """batch_logps with length groups against one padded pass: same log-probs and parameter
    gradients to float32 rounding. The matrix products run on other shapes (fewer rows, shorter
    padding), so sums may round differently; 1e-5 relative is ~100x float32's epsilon over the
    ~100-token sums here, far below any real difference (one wrong token changes a sum by > 0.1)."""
    model = tiny_llama(50, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                       num_key_value_heads=2)  # fmt: skip
    lengths = [3, 40, 5, 38, 4, 41, 6, 39]
    sequences = []
    for n in lengths:
        ids = torch.randint(1, 50, (n,)).tolist()
        sequences.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 2 + ids[2:]})
    passes = []
    hook = model.register_forward_hook(lambda *_: passes.append(1))
    results = []
    for min_saving in (0, 16):
        model.zero_grad()
        logps = logprobs.batch_logps(model, sequences, 0, torch.device("cpu"), min_saving)
        (logps * torch.arange(1.0, 9.0)).sum().backward()  # a different weight per sequence
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((logps.detach(), grads))
    hook.remove()
    assert len(passes) == 1 + 2  # one padded pass, then two groups (short ones, long ones)
    (plain, plain_grads), (grouped, grouped_grads) = results
    torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grouped_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

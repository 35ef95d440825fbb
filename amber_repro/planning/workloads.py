"""How much work each job has: the data's size and lengths, and the lm-eval tasks' requests.

Measured where the run has already made its data (results/ambersafe/data: the manifest's counts,
the pairs' lengths in the base model's tokens), assumed otherwise: every assumption below says so,
and `plan` prints which ones it used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

# English text in the LLaMA tokenizer: about 4 characters a token (used without a tokenizer).
CHARS_PER_TOKEN = 4.0
SAMPLE_ROWS = 2000  # pairs tokenized to measure the lengths


@dataclass(frozen=True)
class PairData:
    """The preference data's size and mean lengths in tokens."""

    train_pairs: int
    test_pairs: int
    train_prompts: int  # SFT's examples: one target per distinct prompt
    test_prompts: int
    prompt_tokens: float
    response_tokens: float
    source: str

    def sequence(self, max_length: int) -> float:
        """A prompt and one response, at most max_length tokens."""
        return min(self.prompt_tokens + self.response_tokens, max_length)


# PKU-SafeRLHF at v0 before filtering: about 297k training and 33k held-out rows (the hub's
# split sizes). Assumed until filter_pairs has run: that 45% of rows have one safe and one unsafe
# response, about 10 rows per prompt, and lengths typical of its Alpaca-7B answers.
ASSUMED_PKU = PairData(
    train_pairs=134_000,
    test_pairs=15_000,
    train_prompts=13_500,
    test_prompts=1_500,
    prompt_tokens=25,
    response_tokens=90,
    source="assumed (PKU-SafeRLHF v0 before filter_pairs has run: 45% of 297k / 33k rows kept, "
    "10 rows a prompt, 25 + 90 tokens)",
)


def assumed_pairs(settings) -> PairData:
    """Before filter_pairs has run: PKU-SafeRLHF's assumed sizes, or for the synthetic data its
    row counts with the same assumed shares (about 70% kept, 9 rows a prompt, 30 + 32 tokens)."""
    if settings.data.source == "hub":
        return ASSUMED_PKU
    rows = settings.data.synthetic
    return PairData(
        train_pairs=int(0.7 * rows.train_rows),
        test_pairs=int(0.7 * rows.test_rows),
        train_prompts=rows.train_rows // 9,
        test_prompts=rows.test_rows // 8,
        prompt_tokens=30,
        response_tokens=32,
        source="assumed (the synthetic rows before filter_pairs has run: 70% kept, 9 rows a "
        "prompt, 30 + 32 tokens)",
    )


def measured_pairs(data_dir: Path, tokenizer_dir: Path | None) -> PairData | None:
    """The counts from filter_pairs' manifest, the lengths from the first SAMPLE_ROWS pairs (in
    the base model's tokens when its folder is there, else characters / CHARS_PER_TOKEN)."""
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        return None
    import polars as pl

    splits = json.loads(manifest.read_text())["splits"]
    sample = pl.read_parquet(data_dir / "pairs-train.parquet", n_rows=SAMPLE_ROWS)
    prompts, responses = sample["prompt"].to_list(), sample["chosen"].to_list()
    responses += sample["rejected"].to_list()
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)

        def mean_tokens(texts):
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            return sum(map(len, ids)) / len(ids)

        unit = f"tokens of {tokenizer_dir}"
    else:

        def mean_tokens(texts):
            return sum(map(len, texts)) / len(texts) / CHARS_PER_TOKEN

        unit = f"characters / {CHARS_PER_TOKEN:g}"
    return PairData(
        train_pairs=splits["train"]["rows_kept"],
        test_pairs=splits["test"]["rows_kept"],
        train_prompts=splits["train"]["unique_prompts"],
        test_prompts=splits["test"]["unique_prompts"],
        prompt_tokens=mean_tokens(prompts),
        response_tokens=mean_tokens(responses) + 1,  # the EOS each response ends with
        source=f"measured ({manifest}; lengths of {len(prompts)} pairs in {unit})",
    )


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval 0.4 task's requests for a LLaMA-tokenizer model (estimates from the task's
    definition): docs in its evaluation split; loglikelihood requests per doc (the choices; one
    when every choice is a single token, which lm-eval scores from one forward pass); tokens of
    one few-shot example and of the fixed preamble; greedy tokens generated at most."""

    docs: int
    requests_per_doc: float
    tokens_per_example: float
    preamble_tokens: float = 0
    generated_tokens: int = 0

    def request_tokens(self, shots: int) -> float:
        return self.preamble_tokens + (shots + 1) * self.tokens_per_example


HARNESS_TASKS = {
    "arc_challenge": HarnessTask(docs=1172, requests_per_doc=4, tokens_per_example=50),
    "hellaswag": HarnessTask(docs=10042, requests_per_doc=4, tokens_per_example=110),
    # Answers " A".." D": one forward pass per question.
    "mmlu": HarnessTask(docs=14042, requests_per_doc=1, tokens_per_example=110),
    # A fixed six-question preamble, about 7 true and false answers per question (mc2).
    "truthfulqa_mc2": HarnessTask(
        docs=817, requests_per_doc=7.2, tokens_per_example=40, preamble_tokens=250
    ),
    "winogrande": HarnessTask(docs=1267, requests_per_doc=2, tokens_per_example=30),
    # generate_until "Question:", at most lm-eval's default 256 new tokens.
    "gsm8k": HarnessTask(
        docs=1319, requests_per_doc=1, tokens_per_example=160, generated_tokens=256
    ),
}


@dataclass(frozen=True)
class HarnessWork:
    forward_tokens: float  # tokens through loglikelihood (and generation prompts') forward passes
    generated_tokens: float  # greedy tokens
    requests: float  # forward passes' sequences
    unknown: tuple[str, ...] = ()  # tasks with no estimate here

    def __add__(self, other: HarnessWork) -> HarnessWork:
        return HarnessWork(
            self.forward_tokens + other.forward_tokens,
            self.generated_tokens + other.generated_tokens,
            self.requests + other.requests,
            self.unknown + other.unknown,
        )


def harness_work(tasks: list[str], limit: int | None) -> HarnessWork:
    """The work of lm-eval tasks given as name:shots (eval.harness_tasks), for one model."""
    work = HarnessWork(0.0, 0.0, 0.0)
    for text in tasks:
        name, _, shots = text.partition(":")
        task = HARNESS_TASKS.get(name)
        if task is None:
            work += HarnessWork(0.0, 0.0, 0.0, (name,))
            continue
        docs = min(task.docs, limit or task.docs)
        requests = docs * task.requests_per_doc
        forward = requests * task.request_tokens(int(shots or 0))
        work += HarnessWork(forward, docs * task.generated_tokens, requests)
    return work


def preference_task_work(pairs: PairData, max_length: int, limit: int | None) -> HarnessWork:
    """Our saferlhf_preference task: two loglikelihood requests per held-out pair."""
    docs = min(pairs.test_pairs, limit or pairs.test_pairs)
    return HarnessWork(2 * docs * pairs.sequence(max_length), 0.0, 2 * docs)


def eval_sample_size(examples: int, eval_examples: int, batch: int) -> int:
    """Examples one held-out evaluation scores (batch_order.evaluation_sample's rounding)."""
    if examples < batch:
        return examples
    return math.ceil(eval_examples / batch) * batch

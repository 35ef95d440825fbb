"""A small LLaMA-style SentencePiece tokenizer and conversations for the AmberChat tests."""

from __future__ import annotations

import random
from pathlib import Path

from amber_repro.models.tiny_amber import template_texts, train_llama_sentencepiece

WORDS = [
    "the",
    "a",
    "fox",
    "dog",
    "cat",
    "quick",
    "brown",
    "lazy",
    "jumps",
    "over",
    "what",
    "is",
    "why",
    "how",
    "when",
    "where",
    "answer",
    "question",
    "please",
    "explain",
    "list",
    "write",
    "code",
    "python",
    "function",
    "return",
    "value",
    "number",
    "2024",
    "42",
    "3.14",
    ",",
    ".",
    "!",
    "?",
    ":",
    "café",
    "naïve",
    "résumé",
]

# Questions and answers with digits, punctuation, accents and newlines (the template's separators
# sit next to each kind of text).
MULTI_TURN = [
    {"role": "human", "text": "What is a fox?"},
    {"role": "gpt", "text": "A quick brown animal, like a dog."},
    {"role": "human", "text": "Why 42?\nExplain in 2 lines."},
    {"role": "gpt", "text": "Because 42 is the answer.\nNaïve, but true!"},
    {"role": "human", "text": "List three."},
    {"role": "gpt", "text": "fox, dog, cat"},
]
SINGLE_TURN = [
    {"role": "human", "text": "Write python code."},
    {"role": "gpt", "text": "def f():\n    return 3.14"},
]
# A second human message quoting the template's separator: FastChat's turn split finds three
# parts there and stops counting, so its length check masks the whole conversation, the first
# answer (which the loop had already unmasked) included.
MISMATCHED = [
    {"role": "human", "text": "Hi."},
    {"role": "gpt", "text": "Hello."},
    {"role": "human", "text": "Complete: USER: hi ASSISTANT: hello"},
    {"role": "gpt", "text": "Done."},
]


def corpus(lines: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(lines)]
    texts += [turn["text"] for conversation in (MULTI_TURN, SINGLE_TURN) for turn in conversation]
    return template_texts() + texts


def train_tokenizer(out_dir: Path, legacy: bool = True) -> Path:
    return train_llama_sentencepiece(corpus(), out_dir, vocab_size=400, legacy=legacy)

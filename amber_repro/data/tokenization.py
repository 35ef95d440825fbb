"""The reference implementation's tokenization, as pure functions on token id lists.

Prompt and response are tokenized separately with no special tokens (no BOS); EOS is appended to
each response; there is no chat template. Labels mask the prompt with -100 and train the response
and EOS.
Truncation ("keep_start"): if prompt + longer response > max_length, keep the first
max_prompt_length prompt tokens; if still too long, cut every response to
max_length - max_prompt_length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amber_repro.errors import ConfigError, DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Limits:
    max_length: int
    max_prompt_length: int

    def __post_init__(self):
        if not 0 < self.max_prompt_length < self.max_length:
            raise ConfigError(
                f"need 0 < max_prompt_length ({self.max_prompt_length}) "
                f"< max_length ({self.max_length})"
            )


def truncate(
    prompt: list[int], responses: list[list[int]], limits: Limits
) -> tuple[list[int], list[list[int]]]:
    """Apply keep-start truncation to a prompt and its responses (each already ending in EOS)."""
    longer = max(len(r) for r in responses)
    if len(prompt) + longer > limits.max_length:
        prompt = prompt[: limits.max_prompt_length]
    if len(prompt) + longer > limits.max_length:
        responses = [r[: limits.max_length - limits.max_prompt_length] for r in responses]
    return prompt, responses


def sequence(prompt: list[int], response: list[int]) -> dict[str, list[int]]:
    """input_ids = prompt + response; labels train only the response part."""
    return {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response}


def encode(tokenizer, text: str) -> list[int]:
    return checked(tokenizer, text, tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    """`encode` of each text, in one tokenizer call (a fast tokenizer encodes a batch at once)."""
    if not texts:
        return []
    batch = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [checked(tokenizer, text, ids) for text, ids in zip(texts, batch, strict=True)]


def checked(tokenizer, text: str, ids: list[int]) -> list[int]:
    if tokenizer.eos_token_id in ids:
        # The reference asserts this too: an EOS inside the text would end the sequence early.
        raise DataError(f"text contains the EOS token: {text[:80]!r}")
    return ids


def tokenize_pair(
    tokenizer, prompt: str, chosen: str, rejected: str, limits: Limits
) -> dict[str, dict]:
    """Tokenize a preference pair: {"chosen": sequence, "rejected": sequence}."""
    texts = (prompt, chosen, rejected)
    return pair_of_ids(*(encode(tokenizer, t) for t in texts), tokenizer.eos_token_id, limits)


def pair_of_ids(
    prompt: list[int], chosen: list[int], rejected: list[int], eos_id: int, limits: Limits
) -> dict[str, dict]:
    """A pair from its encoded texts: EOS appended to each response, truncated, labelled."""
    prompt, (chosen, rejected) = truncate(prompt, [[*chosen, eos_id], [*rejected, eos_id]], limits)
    return {"chosen": sequence(prompt, chosen), "rejected": sequence(prompt, rejected)}


def tokenize_sft(tokenizer, prompt: str, response: str, limits: Limits) -> dict[str, list[int]]:
    """Tokenize an SFT example; the reference treats it as a pair whose two responses are the
    target."""
    return tokenize_pair(tokenizer, prompt, response, response, limits)["chosen"]


def collate(sequences: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids, attention_mask and labels, each (batch,
    length)."""
    length = max(len(s["input_ids"]) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, s in enumerate(sequences):
        n = len(s["input_ids"])
        input_ids[row, :n] = torch.tensor(s["input_ids"])
        labels[row, :n] = torch.tensor(s["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

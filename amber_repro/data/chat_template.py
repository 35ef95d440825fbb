"""FastChat's vicuna_v1.1 conversation template and its training loss mask, as AmberChat used them.

Written from FastChat v0.2.34 (the same code in v0.2.33): `fastchat/conversation.py` (template
`vicuna_v1.1`, `Conversation.get_prompt` for `SeparatorStyle.ADD_COLON_TWO`) and
`fastchat/train/train.py` (`preprocess`). `tests/test_chat_oracle.py` compares `preprocess` with
FastChat's own on the same tokenizer. Faithful on purpose, including FastChat's quirks: the turn
offsets assume a LLaMA SentencePiece tokenizer, and a conversation whose computed length disagrees
with its tokenization is not trained on at all (docs/amberchat.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

SYSTEM_MESSAGE = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP = " "
SEP2 = "</s>"
# transformers' LabelSmoother.ignore_index, FastChat's IGNORE_TOKEN_ID.
IGNORE_TOKEN_ID = -100
# FastChat's split_long_conversation counts each message as its token length plus 6 (the role
# and separators around it).
MESSAGE_OVERHEAD = 6


class Turn(TypedDict):
    role: str  # "human" | "gpt"
    text: str


@dataclass
class ChatExamples:
    """Tokenized conversations: unpadded, truncated at max_length; labels are -100 where not
    trained. `mismatched`: indices of conversations masked out entirely by FastChat's rule."""

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)


def _messages(turns: Sequence[Turn], where: str) -> list[tuple[str, str]]:
    """(role name, text) pairs as FastChat's preprocess builds them: a first turn not from the
    human is skipped, then roles must alternate USER, ASSISTANT, ..."""
    for turn in turns:
        if turn["role"] not in ROLES:
            raise ValueError(f"{where}: role {turn['role']!r} is neither 'human' nor 'gpt'")
    if turns and turns[0]["role"] != "human":
        turns = turns[1:]
    messages = []
    for j, turn in enumerate(turns):
        expected = "human" if j % 2 == 0 else "gpt"
        if turn["role"] != expected:
            raise ValueError(f"{where}: turn {j} is from {turn['role']!r}, expected {expected!r}")
        messages.append((ROLES[turn["role"]], turn["text"]))
    return messages


def _get_prompt(messages: Sequence[tuple[str, str | None]]) -> str:
    """Conversation.get_prompt for ADD_COLON_TWO. An empty (or None) message renders as the bare
    role and colon with no separator: FastChat tests `if message:`, which is how a generation
    prompt ends."""
    seps = (SEP, SEP2)
    text = SYSTEM_MESSAGE + seps[0]
    for i, (role, message) in enumerate(messages):
        text += f"{role}: {message}{seps[i % 2]}" if message else f"{role}:"
    return text


def render_prompt(turns: Sequence[Turn]) -> str:
    """The training text of a conversation: system prompt, then "USER: ... ASSISTANT: ...</s>"."""
    return _get_prompt(_messages(turns, "conversation"))


def generation_prompt(turns: Sequence[Turn]) -> str:
    """The text a model continues to answer the last human turn (ends with "ASSISTANT:"). A trailing
    gpt turn is dropped, so a held-out conversation can be given whole to answer its last question.
    """
    messages = _messages(turns, "conversation")
    if messages and messages[-1][0] == ROLES["gpt"]:
        messages = messages[:-1]
    if not messages:
        raise ValueError("conversation: no human turn to answer")
    return _get_prompt([*messages, (ROLES["gpt"], None)])


def message_token_length(text: str, tokenizer) -> int:
    """A message's length as FastChat's split_long_conversation counts it (BOS included, + 6)."""
    return len(tokenizer(text).input_ids) + MESSAGE_OVERHEAD


def _ignore(target: list[int], start: int, stop: int | None = None) -> None:
    """target[start:stop] = IGNORE_TOKEN_ID with Python's slice semantics, as FastChat does on a
    tensor: a negative bound counts from the end (FastChat's tensor is padded to max_length)."""
    for k in range(len(target))[start:stop]:
        target[k] = IGNORE_TOKEN_ID


def _mask(text: str, input_ids: list[int], tokenizer, max_length: int) -> tuple[list[int], bool]:
    """One conversation's labels, and whether FastChat's length-mismatch rule masked it entirely.

    The arithmetic runs on a copy padded to max_length, like FastChat's padding="max_length"
    tensor, so that every slice (a negative one included) lands where FastChat's lands.
    """
    pad_id = tokenizer.pad_token_id
    target = input_ids + [pad_id] * (max_length - len(input_ids))
    # FastChat counts the tokens that are not padding; pad = unk, so an <unk> in the text counts
    # as padding too (and then triggers the mismatch rule).
    total_len = sum(token != pad_id for token in target)
    sep = SEP + ROLES["gpt"] + ": "
    turns = text.split(SEP2)
    cur_len = 1
    _ignore(target, 0, cur_len)  # the BOS
    for i, turn in enumerate(turns):
        if turn == "":
            break
        turn_len = len(tokenizer(turn).input_ids)
        parts = turn.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        # "- 2": the BOS tokenizer() adds, and the "▁" piece the LLaMA tokenizer gives the
        # separator's trailing space (FastChat's hard-coded correction).
        instruction_len = len(tokenizer(parts[0]).input_ids) - 2
        if i != 0 and not tokenizer.legacy:
            # Without the legacy mode, text right after "</s>" gets no dummy-prefix space, one
            # token fewer than the turn tokenized alone.
            instruction_len -= 1
        _ignore(target, cur_len, cur_len + instruction_len)
        cur_len += turn_len
        if i != 0 and not tokenizer.legacy:
            cur_len -= 1
    _ignore(target, cur_len)
    mismatched = cur_len < max_length and cur_len != total_len
    if mismatched:
        _ignore(target, 0)
    return target[: len(input_ids)], mismatched


def preprocess(conversations: Sequence[Sequence[Turn]], tokenizer, max_length: int) -> ChatExamples:
    """FastChat's train.py `preprocess`: the vicuna_v1.1 text of each conversation, tokenized (BOS
    added, truncated at max_length), labelled only on the assistant's answers and their "</s>".

    `tokenizer` is a LLaMA tokenizer whose pad token is its unk token (FastChat sets it so) and
    whose `legacy` attribute says how text after a special token is tokenized.
    """
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id != tokenizer.unk_token_id:
        raise ValueError(
            f"tokenizer: pad token {tokenizer.pad_token!r} is not its unk token "
            f"{tokenizer.unk_token!r}; FastChat's preprocess counts tokens by the pad id"
        )
    examples = ChatExamples()
    for index, turns in enumerate(conversations):
        text = _get_prompt(_messages(turns, f"conversation {index}"))
        ids = tokenizer(text, max_length=max_length, truncation=True).input_ids
        labels, mismatched = _mask(text, list(ids), tokenizer, max_length)
        examples.input_ids.append(list(ids))
        examples.labels.append(labels)
        if mismatched:
            examples.mismatched.append(index)
    return examples

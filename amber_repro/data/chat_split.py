"""FastChat's `fastchat/data/split_long_conversation.py` (identical at v0.2.33 and v0.2.34), one
conversation at a time, with every message it loses counted instead of lost silently.

What the original does, and so what this does (docs/amberchat.md):

1. `split_one_sample`: a dangling last message (an odd count) is cut off; fewer than two messages
   left drops the conversation. Each message counts as its token length + 6
   (`chat_template.message_token_length`). Walking the human/gpt pairs, a pair that would take the
   running length past `max_length` closes the current piece before it (the pair starts the next
   piece; the running length restarts at 0, then adds the pair); the last pair closes the final
   piece only if it did not itself trigger a cut. So a cut at the last pair loses that pair, and a
   first pair longer than `max_length` makes an empty first piece. A piece is `<id>_<start index>`.
2. `filter_invalid_roles`, on the pieces: an empty piece is dropped, and so is a piece whose
   messages are not human, gpt, human, gpt, ... from its first one.

The role check runs on pieces, after splitting, so a bad role loses only the pieces that hold it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ROLES = ("human", "gpt")

# Drop reasons, the manifest's keys: what is counted (conversation, piece, message) comes first.
TOO_SHORT = "conversations: fewer than 2 messages"
DANGLING = "messages: dangling last message"
LOST_TAIL = "messages: the last pair, cut off when it triggers a split"
EMPTY_PIECE = "pieces: empty (the first pair alone is over max_length)"
NOT_HUMAN_FIRST = "pieces: first message not from human"
BAD_ROLES = "pieces: roles not alternating human/gpt"


@dataclass
class SplitOutcome:
    """A conversation's kept pieces as (id, messages), and what was lost, by reason."""

    pieces: list[tuple[str, list[dict]]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    # Kept pieces longer than max_length (one pair alone too long): training truncates them.
    over_max_length: int = 0


def piece_bounds(lengths: Sequence[int], max_length: int) -> list[tuple[int, int]]:
    """`split_one_sample`'s [start, end) message ranges, empty ones included, for messages whose
    token counts (+6 each) are `lengths`; an odd count ignores the last message."""
    n = len(lengths) // 2 * 2
    if n < 2:
        return []
    bounds, start, running = [], 0, 0
    for i in range(0, n, 2):
        pair = lengths[i] + lengths[i + 1]
        if running + pair > max_length:
            bounds.append((start, i))
            start, running = i, 0
        elif i == n - 2:
            bounds.append((start, i + 2))
        running += pair
    return bounds


def role_problem(messages: Sequence[dict]) -> str | None:
    """`filter_invalid_roles` for one piece: why it is dropped, or None when it is kept."""
    if not messages:
        return EMPTY_PIECE
    for j, message in enumerate(messages):
        if message["from"] != ROLES[j % 2]:
            return NOT_HUMAN_FIRST if j == 0 else BAD_ROLES
    return None


def split_conversation(
    conversation_id: str,
    messages: Sequence[dict],
    token_length: Callable[[str], int],
    max_length: int,
) -> SplitOutcome:
    """Split one conversation ({"from", "value"} messages) and filter its pieces, as FastChat."""
    outcome = SplitOutcome()
    if len(messages) % 2:
        outcome.dropped[DANGLING] += 1
    if len(messages) // 2 * 2 < 2:
        outcome.dropped[TOO_SHORT] += 1
        return outcome
    # FastChat tokenizes every message of the even prefix, whatever its role.
    lengths = [token_length(m["value"]) for m in messages[: len(messages) // 2 * 2]]
    bounds = piece_bounds(lengths, max_length)
    outcome.dropped[LOST_TAIL] += len(lengths) - bounds[-1][1]
    for start, end in bounds:
        piece = list(messages[start:end])
        problem = role_problem(piece)
        if problem:
            outcome.dropped[problem] += 1
            continue
        outcome.pieces.append((f"{conversation_id}_{start}", piece))
        outcome.over_max_length += sum(lengths[start:end]) > max_length
    return outcome

"""A preference pair in one packed row: the prompt it shares runs once for chosen and rejected.

A pair's chosen and rejected sequences start with the same prompt. Packed, the row is

    head = prompt[:-1] | branch 1 = prompt[-1] + chosen response | branch 2 = prompt[-1] + rejected

with position ids that restart at len(head) in each branch, and an attention mask under which a
token sees the head and the earlier tokens of its own branch only. Every token then sees the same
tokens at the same positions as in its own sequence, so each response token's log-prob is the one
the separate sequence gives (to float rounding: the matrix products see other shapes), while the
prompt (less its last token) is computed once instead of twice. The last prompt token is in both
branches because its output predicts each response's first token; in the row, the token before
branch 2 is the end of branch 1, so branch 2's first label is not scored (it is a prompt token).

Used by the reference pass and by DPO's forward when `share_prompt` is set (docs/settings.md);
the recipe's layout (chosen and rejected as separate padded rows) stays the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from amber_repro.data.tokenization import IGNORE_INDEX
from amber_repro.errors import ConfigError
from amber_repro.training.logprobs import in_length_groups, token_logps

HEAD, CHOSEN, REJECTED, PADDING = 0, 1, 2, -1  # segment of each token of a packed row


def shared_prompt_length(chosen: dict, rejected: dict) -> int:
    """Leading tokens that are equal in both sequences and trained in neither (their prompt)."""
    n = 0
    for a, b, label_a, label_b in zip(
        chosen["input_ids"],
        rejected["input_ids"],
        chosen["labels"],
        rejected["labels"],
        strict=False,
    ):
        if a != b or label_a != IGNORE_INDEX or label_b != IGNORE_INDEX:
            break
        n += 1
    return n


def pack_pair(pair: dict[str, dict]) -> dict[str, list[int]]:
    """One row of a tokenized pair ({"chosen", "rejected"}: {"input_ids", "labels"}):
    input_ids, position_ids, segments (HEAD, CHOSEN, REJECTED) and labels, each a list of
    len(head) + len(branch 1) + len(branch 2)."""
    chosen, rejected = pair["chosen"], pair["rejected"]
    head = max(shared_prompt_length(chosen, rejected) - 1, 0)
    row = {
        "input_ids": chosen["input_ids"][:head],
        "position_ids": list(range(head)),
        "segments": [HEAD] * head,
        "labels": [IGNORE_INDEX] * head,
    }
    for segment, sequence in ((CHOSEN, chosen), (REJECTED, rejected)):
        branch = sequence["input_ids"][head:]
        row["input_ids"] += branch
        row["position_ids"] += range(head, head + len(branch))
        row["segments"] += [segment] * len(branch)
        # A branch's first token is a prompt token (or, with no prompt, a first token that no
        # layout scores): never a label.
        row["labels"] += [IGNORE_INDEX, *sequence["labels"][head + 1 :]]
    return row


def attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """segments (batch, length), PADDING after each row -> (batch, 1, length, length) bool, True
    where query i may attend key j: j <= i, and key j in the head or in query i's own branch.
    A padding query attends key 0 only: with no key at all, some attention kernels give NaN
    (torch 2.13's CPU kernels give zeros), which would reach the loss as 0 * NaN."""
    length = segments.shape[1]
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    real = (query != PADDING) & (key != PADDING)
    visible = causal & real & ((key == HEAD) | (key == query))
    first_key = torch.arange(length, device=segments.device) == 0
    return (visible | ((query == PADDING) & first_key)).unsqueeze(1)


def collate_rows(rows: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict:
    """Right-pad packed rows to the longest: input_ids, position_ids, segments, labels, each
    (batch, length), and the (batch, 1, length, length) attention mask."""
    length = max(len(r["input_ids"]) for r in rows)
    fills = {
        "input_ids": pad_token_id,
        "position_ids": 0,
        "segments": PADDING,
        "labels": IGNORE_INDEX,
    }
    batch = {
        name: torch.tensor([r[name] + [fill] * (length - len(r[name])) for r in rows])
        for name, fill in fills.items()
    }
    batch["attention_mask"] = attention_mask(batch["segments"])
    return batch


def model_mask(model, mask: torch.Tensor) -> torch.Tensor:
    """The boolean mask in the form the model's attention takes a custom 4D mask: as it is for
    SDPA (True = attend), additive (0 or the dtype's minimum) for eager attention."""
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation == "sdpa":
        return mask
    if implementation == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    raise ConfigError(
        f"share_prompt needs SDPA or eager attention (a custom attention mask); this model "
        f"uses {implementation!r}: set share_prompt: false"
    )


def packed_logps(
    model, rows: Sequence[dict[str, list[int]]], pad_token_id: int, device: torch.device
) -> torch.Tensor:
    """Summed response log-probs of packed rows in one forward pass: (len(rows), 2), columns
    chosen and rejected."""
    batch = {k: v.to(device) for k, v in collate_rows(rows, pad_token_id).items()}
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=model_mask(model, batch["attention_mask"]),
        position_ids=batch["position_ids"],
        use_cache=False,
    ).logits
    per_token = token_logps(logits, batch["labels"])  # (batch, length - 1), 0 where unlabelled
    scored = batch["segments"][:, 1:]  # the segment of each labelled token
    return torch.stack([(per_token * (scored == s)).sum(-1) for s in (CHOSEN, REJECTED)], dim=1)


def shared_prompt_logps(
    model, pairs: Sequence[dict], pad_token_id: int, device: torch.device, min_saving: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of chosen and rejected, each (len(pairs),), one packed row per
    pair; min_saving > 0 runs the rows in length groups (`logprobs.length_groups`)."""
    rows = [pack_pair(p) for p in pairs]
    logps = in_length_groups(
        lambda part: packed_logps(model, part, pad_token_id, device),
        rows,
        [len(r["input_ids"]) for r in rows],
        min_saving,
    )
    return logps[:, 0], logps[:, 1]

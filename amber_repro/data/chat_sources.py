"""The two source schemas of the AmberChat mix, read and checked.

Both files are one JSON list of conversations in ShareGPT form, `conversations: [{from, value}]`:
- `wizardlm_evol_instruct` (WizardLM_evol_instruct_V2_143k.json): the id is under `idx`;
  LLM360's prepare_evol_datamix.py keeps only `idx` (renamed `id`) and `conversations`;
- `sharegpt` (ShareGPT_V3_unfiltered_cleaned_split.json): the id is under `id`.

Where FastChat would crash (a missing key, a non-text id or message), this stops with the file, the
row and the key. A role other than human/gpt is not an error: FastChat drops the pieces holding it
(chat_split.role_problem), and so do we, counting them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from amber_repro.errors import DataError

ID_KEYS = {"wizardlm_evol_instruct": "idx", "sharegpt": "id"}
# The sources in the order prepare_evol_datamix.py concatenates them: ShareGPT first.
SOURCE_SCHEMAS = {"sharegpt": "sharegpt", "wizardlm": "wizardlm_evol_instruct"}


def read_source(path: Path, schema: str) -> list[dict]:
    """The conversations of one source file as [{"id", "conversations"}], checked."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        rows = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(rows, list):
        raise DataError(f"{path}: a JSON list of conversations expected, got {type(rows).__name__}")
    return [_conversation(path, index, row, ID_KEYS[schema]) for index, row in enumerate(rows)]


def _conversation(path: Path, index: int, row, id_key: str) -> dict:
    where = f"{path}: row {index}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON object expected, got {type(row).__name__}")
    if id_key not in row:
        raise DataError(f"{where}: missing key {id_key!r} (keys: {', '.join(sorted(row))})")
    conversation_id = row[id_key]
    if not isinstance(conversation_id, str):
        # FastChat appends "_<start>" to the id: only text works.
        raise DataError(f"{where}: key {id_key!r}: text expected, got {conversation_id!r}")
    where = f"{where} ({id_key} {conversation_id!r})"
    if "conversations" not in row:
        raise DataError(f"{where}: missing key 'conversations' (keys: {', '.join(sorted(row))})")
    messages = row["conversations"]
    if not isinstance(messages, list):
        raise DataError(f"{where}: 'conversations' must be a list, got {type(messages).__name__}")
    return {
        "id": conversation_id,
        "conversations": [_message(where, j, m) for j, m in enumerate(messages)],
    }


def _message(where: str, index: int, message) -> dict:
    where = f"{where}: message {index}"
    if not isinstance(message, dict):
        raise DataError(f"{where}: a JSON object expected, got {type(message).__name__}")
    for key in ("from", "value"):
        if key not in message:
            raise DataError(f"{where}: missing key {key!r} (keys: {', '.join(sorted(message))})")
    if not isinstance(message["value"], str):
        raise DataError(f"{where}: key 'value': text expected, got {message['value']!r}")
    # Any other `from` (null, "system", "bing"...) is a role FastChat's filter drops, not an error.
    return {"from": message["from"], "value": message["value"]}


def raw_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Every message text of raw source files, for training the embedded tokenizer on the data
    before it is split (the split counts tokens). Only the texts are read, so either schema works;
    the rows are checked by `read_source` when the data is built."""
    for path in paths:
        try:
            rows = json.loads(Path(path).read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not a readable JSON file ({error})") from error
        for row in rows if isinstance(rows, list) else []:
            messages = row.get("conversations") if isinstance(row, dict) else None
            for message in messages if isinstance(messages, list) else []:
                if isinstance(message, dict) and isinstance(message.get("value"), str):
                    yield message["value"]

"""The value types every settings section shares: constrained strings and the strict base class.

Every section module (sections.py, eval_sections.py, chat_sections.py, resource_sections.py) builds
on them; schema.py gathers the sections into the one Config. Also the helpers the settings
modules share: `merge` (a config over another), `_is_model` and `unknown_key`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints
from pydantic_core import PydanticCustomError

# Patterns use explicit ASCII classes: a regex \w would admit any Unicode letter.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a name part: starts with a letter or digit
PATH_PART = r"[A-Za-z0-9_.+-]+"  # a path component in the portable character set
# A relative path's first component: not '-', or the program given the path reads an option.
FIRST_PART = r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]*"
RELATIVE_PATH = rf"{FIRST_PART}(?:/{PATH_PART})*"


def _not_an_option(value):
    """Quoting keeps `-rf` one shell word, but the program receiving it still reads an option."""
    if isinstance(value, str) and value.startswith("-"):
        raise PydanticCustomError(
            "option_like", "starts with '-': the program it is passed to would read it as an option"
        )
    return value


# Every string below can reach a command line: each refuses a leading '-' saying why (its pattern
# refuses it too, for config/schema.json).
NOT_AN_OPTION = BeforeValidator(_not_an_option)

# A Hugging Face repository id: namespace/name.
HubId = Annotated[
    str, StringConstraints(pattern=rf"^{NAME}/{NAME}$", max_length=200), NOT_AN_OPTION
]
# A git revision: a 40-hex commit sha, or a tag or branch name (may contain '/').
Revision = Annotated[
    str,
    StringConstraints(pattern=rf"^(?:[0-9a-f]{{40}}|{NAME}(?:/{NAME})*)$"),
    NOT_AN_OPTION,
]
SplitName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"), NOT_AN_OPTION
]
# A file-system path, relative to the working directory or absolute.
PortablePath = Annotated[
    str,
    StringConstraints(pattern=rf"^(?:/{PATH_PART}(?:/{PATH_PART})*|{RELATIVE_PATH})/?$"),
    NOT_AN_OPTION,
]
# An Apptainer image: a local path, or a docker://, oras://, library:// or shub:// URI (pin a
# digest).
IMAGE_URI = rf"(?:docker|oras|library|shub)://{PATH_PART}(?:[/:@]{PATH_PART})*"
ImageRef = Annotated[
    str,
    StringConstraints(pattern=rf"^(?:{IMAGE_URI}|/{PATH_PART}(?:/{PATH_PART})*|{RELATIVE_PATH})$"),
    NOT_AN_OPTION,
]
# An lm-eval task with an optional few-shot count: "arc_challenge:25".
HarnessTask = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[0-9]+)?$"), NOT_AN_OPTION
]
Precision = Literal["float32", "bf16"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too, and a
    float must be finite (inf and nan are refused, whatever the field's bounds)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def unknown_key(key: str, allowed: Iterable[str]) -> str:
    """The line for a key no setting has, with the nearest allowed key(s) when one is close."""
    allowed = sorted(allowed)
    near = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=2)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return f"{key}: unknown key{hint} (allowed here: {', '.join(allowed)})"


def merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)

"""The value types every settings section shares: constrained strings and the strict base class.

Every section module (sections.py, eval_sections.py, chat_sections.py, resource_sections.py) builds
on them; schema.py gathers the sections into the one Config. Also the helpers the settings
modules share: `merge` (a config over another) and `_is_model`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

# Patterns use explicit ASCII classes: a regex \w would admit any Unicode letter.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a name part: starts with a letter or digit
PATH_PART = r"[A-Za-z0-9_.+-]+"  # a path component in the portable character set

# A Hugging Face repository id: namespace/name.
HubId = Annotated[str, StringConstraints(pattern=rf"^{NAME}/{NAME}$", max_length=200)]
# A git revision: a 40-hex commit sha, or a tag or branch name (may contain '/').
Revision = Annotated[str, StringConstraints(pattern=rf"^(?:[0-9a-f]{{40}}|{NAME}(?:/{NAME})*)$")]
SplitName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
# A file-system path, relative to the working directory or absolute.
PortablePath = Annotated[str, StringConstraints(pattern=rf"^/?{PATH_PART}(?:/{PATH_PART})*/?$")]
# An Apptainer image: a local path, or a docker://, oras://, library:// or shub:// URI (pin a
# digest).
IMAGE_URI = rf"(?:docker|oras|library|shub)://{PATH_PART}(?:[/:@]{PATH_PART})*"
ImageRef = Annotated[
    str, StringConstraints(pattern=rf"^(?:{IMAGE_URI}|/?{PATH_PART}(?:/{PATH_PART})*)$")
]
# An lm-eval task with an optional few-shot count: "arc_challenge:25".
HarnessTask = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[0-9]+)?$")
]
Precision = Literal["float32", "bf16"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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

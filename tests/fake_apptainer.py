"""A stand-in for the `apptainer` command, for tests on machines without Apptainer.

It checks and records what the workflow passes to Apptainer; it is not Apptainer and isolates
nothing.
Each call is appended as one JSON line to the file named by $FAKE_APPTAINER_CALLS:
{"argv": [...], "cwd": "..."}. Then:

- `apptainer --version` answers like Apptainer 1.3.4 (Snakemake checks the version first);
- `apptainer [global flags] exec [options] IMAGE CMD...` fails like Apptainer would on a missing
  local image, a missing bind source or a relative bind destination, and otherwise runs CMD on the
  host, in the caller's working directory and environment;
- `apptainer build [options] IMAGE DEFINITION` fails on a missing definition, a %files source
  missing relative to the working directory, or a `{{ NAME }}` build variable given neither by
  --build-arg nor in %arguments; otherwise it writes a small placeholder file at IMAGE.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

VERSION = "apptainer version 1.3.4"
GLOBAL_FLAGS = {"-q", "--quiet", "-s", "--silent", "-d", "--debug", "-v", "--verbose", "--nocolor"}
# Options of `exec` and `build` that take a value (the rest used here are flags).
VALUE_OPTIONS = {
    "-B",
    "--bind",
    "--mount",
    "-H",
    "--home",
    "--pwd",
    "--env",
    "--env-file",
    "-o",
    "--overlay",
    "-W",
    "--workdir",
    "-S",
    "--scratch",
    "--security",
    "--network",
    "--network-args",
    "--hostname",
    "--app",
    "--build-arg",
    "--build-arg-file",
    "--section",
    "--bind-path",
}


def parse_command(argv: list[str]) -> dict:
    """{"command", "options": [(name, value or None)], "positional": [...]}: options are read up to
    the first positional argument for `exec` (the image; what follows is the command to run)."""
    args = list(argv)
    while args and args[0] in GLOBAL_FLAGS:
        args.pop(0)
    if not args:
        return {"command": None, "options": [], "positional": []}
    command, rest = args[0], args[1:]
    options, positional = [], []
    while rest:
        item = rest.pop(0)
        if item.startswith("-") and not positional:
            name, eq, value = item.partition("=")
            if name in VALUE_OPTIONS and not eq:
                value = rest.pop(0) if rest else ""
            options.append((name, value if (eq or name in VALUE_OPTIONS) else None))
        else:
            positional.append(item)
            if command == "exec":
                positional += rest
                break
    return {"command": command, "options": options, "positional": positional}


def binds(options: list) -> list[tuple[str, str]]:
    """(source, destination) of every --bind/-B, comma-separated lists split."""
    found = []
    for name, value in options:
        if name in ("-B", "--bind"):
            for spec in value.split(","):
                source, _, rest = spec.partition(":")
                found.append((source, rest.partition(":")[0] or source))
    return found


def fail(message: str) -> int:
    print(f"FATAL:   {message}", file=sys.stderr)
    return 255


def is_uri(image: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", image) is not None


def definition_sections(text: str) -> dict[str, list[str]]:
    sections, current = {}, None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)", line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def run_exec(parsed: dict) -> int:
    if len(parsed["positional"]) < 2:
        return fail("exec needs an image and a command")
    image, command = parsed["positional"][0], parsed["positional"][1:]
    if not is_uri(image) and not Path(image).exists():
        return fail(f"could not open image {image}: no such file or directory")
    for source, destination in binds(parsed["options"]):
        if not Path(source).exists():
            return fail(f"mount source {source} doesn't exist")
        if not os.path.isabs(destination):
            return fail(f"bind destination {destination} must be an absolute path")
    os.execvp(command[0], command)


def run_build(parsed: dict) -> int:
    if len(parsed["positional"]) != 2:
        return fail("build needs an image path and a definition")
    image, definition = parsed["positional"]
    if not Path(definition).is_file():
        return fail(f"unable to open definition {definition}")
    text = Path(definition).read_text()
    sections = definition_sections(text)
    for line in sections.get("files", []):
        if line.strip() and not line.strip().startswith("#"):
            source = line.split()[0]
            if not Path(source).exists():
                return fail(f"%files: {source} not found relative to {os.getcwd()}")
    defaults = {
        line.split("=", 1)[0].strip() for line in sections.get("arguments", []) if "=" in line
    }
    given = {value.split("=", 1)[0] for name, value in parsed["options"] if name == "--build-arg"}
    for name in sorted(set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text)) - defaults - given):
        return fail(f"build var {name} is not defined through either --build-arg or %arguments")
    Path(image).write_text(f"placeholder image built from {definition}\n")
    return 0


def main(argv: list[str]) -> int:
    with open(os.environ["FAKE_APPTAINER_CALLS"], "a") as calls:
        calls.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
    if argv == ["--version"]:
        print(VERSION)
        return 0
    parsed = parse_command(argv)
    if parsed["command"] == "exec":
        return run_exec(parsed)
    if parsed["command"] == "build":
        return run_build(parsed)
    return fail(f"the stand-in does not implement {argv!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

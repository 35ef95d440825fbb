"""What a replay (replay.py) checks of a bundle (archive.py) before it uses it, so that nothing in
it reaches outside the replay folder DIR:

  - BUNDLE.json is this format and carries the sha256 of its own content (`manifest_sha256`,
    canonical JSON without that key): an edited BUNDLE.json is refused, as a changed member is
    reported. A bundle is not signed: someone who rewrites BUNDLE.json and its digest together
    can make it list other members, but not make unpacking or restoring reach outside DIR (the
    replay runs the bundle's code, though: replay only bundles you trust);
  - every member name is a relative path with no `..`;
  - every `restore` entry moves a listed member, a plain file reached without symlinks inside
    DIR, to a place inside DIR/code, symlinks on the way resolved.

Each refusal is a BundleError: one line naming the member and why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from amber_repro.errors import AmberError

MANIFEST = "BUNDLE.json"
FORMAT = "amber-repro bundle 2"
DIGEST_KEY = "manifest_sha256"


class BundleError(AmberError):
    exit_code = 2


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest without its own digest, as canonical JSON."""
    body = {key: value for key, value in manifest.items() if key != DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_manifest(manifest, archive: Path) -> None:
    """BUNDLE.json as `archive` wrote it: this format, its digest matching its content."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{archive}: {MANIFEST} is not a JSON object; not an amber-repro bundle")
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{archive}: {MANIFEST} has format {manifest.get('format')!r}, not {FORMAT!r}: "
            "archive the run again with this amber_repro"
        )
    if manifest.get(DIGEST_KEY) != manifest_digest(manifest):
        raise BundleError(
            f"{archive}: {MANIFEST} was changed after the bundle was made (its {DIGEST_KEY} does "
            "not match its content): not replaying it"
        )
    for key in ("members", "restore"):
        entries = manifest.get(key)
        if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
        ):
            raise BundleError(f"{archive}: {MANIFEST}'s {key!r} is not a map of names to strings")
    for name in manifest["members"]:
        relative(name, f"member {name!r}")


def relative(name: str, what: str) -> PurePosixPath:
    """`name` as a relative path inside its folder (no absolute path, no `..`, no NUL)."""
    path = PurePosixPath(name)
    if not name or "\x00" in name or "\\" in name:
        raise BundleError(f"{MANIFEST}: {what} is not a usable path")
    if path.is_absolute():
        raise BundleError(f"{MANIFEST}: {what} is an absolute path, outside the replay folder")
    if ".." in path.parts:
        raise BundleError(f"{MANIFEST}: {what} climbs out of its folder with '..'")
    return path


def inside(base: Path, name: str, what: str) -> Path:
    """base/name with every symlink resolved, which must lie inside base (resolved)."""
    root = base.resolve()
    try:
        path = (root / relative(name, what)).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise BundleError(f"{MANIFEST}: {what} cannot be resolved ({error})") from None
    if path == root or not path.is_relative_to(root):
        raise BundleError(f"{MANIFEST}: {what} resolves to {path}, outside {root}")
    return path


def restore_source(target: Path, manifest: dict, member: str) -> Path:
    """A member to restore: listed, a plain file inside DIR, no symlink on the way."""
    what = f"restore source {member!r}"
    if member not in manifest["members"]:
        raise BundleError(f"{MANIFEST}: {what} is not a listed member of the bundle")
    path = inside(target, member, what)
    lexical = target.resolve() / relative(member, what)
    if path != lexical or lexical.is_symlink():
        raise BundleError(f"{MANIFEST}: {what} is reached through a symlink (to {path})")
    if not lexical.is_file():
        raise BundleError(f"{MANIFEST}: {what} is missing from the bundle, an input of the run")
    return lexical


def restore_plan(target: Path, manifest: dict) -> list[tuple[Path, Path]]:
    """(source, destination) of each restore entry, both checked: the source a listed member
    inside DIR, the destination inside DIR/code (symlinks on the way resolved now)."""
    plan = []
    for member, place in manifest["restore"].items():
        source = restore_source(target, manifest, member)
        destination = inside(target / "code", place, f"restore target {place!r} (of {member!r})")
        plan.append((source, destination))
    return plan

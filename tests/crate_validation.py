"""roc-validator (crs4/rocrate-validator), run offline on a crate folder.

The validator fetches the crate's JSON-LD contexts over HTTP through its requests-cache session,
and in offline mode answers only from that cache. Here the cache is filled first with the copies
in tests/crate_contexts/ (README.md there: sources and licences), through a requests adapter that
serves those files under their published URLs; nothing reaches the network.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests_cache import CachedSession
from urllib3 import HTTPResponse

CONTEXTS_DIR = Path(__file__).parent / "crate_contexts"
CONTEXTS = {
    "https://w3id.org/ro/crate/1.1/context": "ro-crate-1.1-context.jsonld",
    "https://w3id.org/ro/terms/workflow-run/context": "workflow-run-context.jsonld",
}
ACCEPT = "application/ld+json, application/json, */*;q=0.1"  # what the validator's loader sends


class LocalContexts(BaseAdapter):
    """Answers a request for a known context URL with its file; anything else is an error."""

    def send(self, request, **kwargs):
        name = CONTEXTS.get(request.url)
        if name is None:
            raise requests.ConnectionError(f"offline: {request.url} is not a shipped context")
        body = (CONTEXTS_DIR / name).read_bytes()
        raw = HTTPResponse(
            body=io.BytesIO(body),
            headers={"Content-Type": "application/ld+json"},
            status=200,
            preload_content=False,
            request_url=request.url,
        )
        return HTTPAdapter().build_response(request, raw)

    def close(self):
        pass


def seeded_cache(path: Path) -> Path:
    """A requests-cache SQLite file holding the shipped contexts, as the validator opens it."""
    session = CachedSession(cache_name=str(path), backend="sqlite", allowable_codes=(200,))
    session.mount("https://", LocalContexts())
    for url in CONTEXTS:
        session.get(url, headers={"Accept": ACCEPT}).raise_for_status()
    session.close()
    return path


@dataclass(frozen=True)
class Issue:
    severity: str
    check: str
    message: str
    entity: str | None


def validate(crate: Path, profile: str, cache: Path) -> tuple[bool, list[Issue]]:
    """(passed, issues) of `profile` (e.g. workflow-run-crate-0.5) at the recommended level."""
    from rocrate_validator import services
    from rocrate_validator.models import Severity, ValidationSettings

    settings = ValidationSettings(
        rocrate_uri=str(crate),
        profile_identifier=profile,
        requirement_severity=Severity.RECOMMENDED,
        offline=True,
        cache_path=seeded_cache(cache),
    )
    result = services.validate(settings)
    issues = [
        Issue(i.severity.name, i.check.identifier, i.message, i.violatingEntity)
        for i in result.get_issues()
    ]
    return result.passed(), issues

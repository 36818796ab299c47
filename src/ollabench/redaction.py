"""Credentials stay in memory: the one redaction every recorded, logged, reported or raised
server address and header goes through.

A server behind an authenticating proxy is reached with credentials in its URL
(`http://user:password@host`, `?api_key=...`) or in a header (`Authorization: Bearer ...`).
The process needs them to talk to it; env.json, the records, the report, compare's
provenance and error messages need only to know that there were some. Keys read from the
environment are also remembered here, so a server that echoes one back in an error body
cannot carry it onto disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
# Query parameters that carry a credential (?api_key=, ?token=, ?sig=, ...).
SECRET_PARAM = re.compile(r"key|token|secret|password|passwd|auth|sig|credential", re.I)
# Header names whose value is a credential.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key",
                            "cookie", "set-cookie"})
# user:password@ (or token@) inside any URL in free text.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&][^=&\s]*(?:key|token|secret|password|passwd|auth|sig|credential)"
    r"[^=&\s]*=)(?P<value>[^&\s#]+)", re.I)
_MIN_SECRET_CHARS = 4  # shorter values would redact ordinary words
_known: set[str] = set()


def remember(secret: str | None) -> None:
    """Treat this value as secret in every text scrub() sees from now on (an API key read
    from the environment, a URL's password)."""
    if secret and len(secret) >= _MIN_SECRET_CHARS:
        _known.add(secret)


def redact_url(url: str) -> str:
    """The URL with its user info and credential-bearing query values replaced (a URL
    without a scheme, as OLLAMA_HOST may be, is read as host[:port][/path])."""
    has_scheme = "://" in url
    parts = urlsplit(url if has_scheme else f"//{url}")
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if SECRET_PARAM.search(k) else v) for k, v in pairs],
                          safe="<>")
    redacted = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return scrub(redacted if has_scheme else redacted.removeprefix("//"))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as they may be recorded: credential values replaced, names kept."""
    return {name: REDACTED if name.lower() in SECRET_HEADERS else scrub(value)
            for name, value in headers.items()}


def scrub(text: str) -> str:
    """Free text (an error message, a server's reply) without URL credentials or any value
    remember() was given."""
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)


def url_credentials(url: str) -> str | None:
    """What in a URL is a credential (user info, a secret query parameter), named for an
    error message without its value; None when there is none."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if "@" in parts.netloc:
        return "its user info (user:password@)"
    names = [k for k, _ in parse_qsl(parts.query) if SECRET_PARAM.search(k)]
    return f"its query parameter {names[0]!r}" if names else None


def remember_url(url: str) -> None:
    """Remember the password (or token) in a URL's user info, and secret query values."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    remember(parts.password)
    if parts.username and parts.password is None:
        remember(parts.username)  # a bare token as user info
    for name, value in parse_qsl(parts.query):
        if SECRET_PARAM.search(name):
            remember(value)

"""What every HTTP client in urbangeo shares: redaction, Retry-After, backoff, capped reads.

The tile client and the ``openai`` caption backend talk to servers the user names, so the same
rules hold for both: a URL is redacted before it is printed or stored, a server's Retry-After
is honoured up to a cap, retries back off exponentially with jitter (so parallel workers do not
retry in lockstep), and no body is read beyond a size limit (a misconfigured or hostile server
must not fill the memory).
"""

from __future__ import annotations

import base64
import email.utils
import random
import re
import time
from datetime import UTC
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from urbangeo.errors import RemoteError

MAX_RETRY_AFTER_S = 120.0
"""Longest wait a server's Retry-After can impose; longer asks are cut to this."""

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d*)?")
_READ_CHUNK = 1 << 20


def redact(url: str) -> str:
    """``url`` with user:password and every query value hidden, safe to print or store."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its user:password, and the HTTP Basic ``Authorization`` value they mean.

    urllib cannot send credentials written in a URL (it takes them for part of the host name),
    so they travel as a header instead.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that :func:`redact` hides (password, query values), for scrubbing
    them from text a server echoed back; very short values are left alone."""
    parts = urlsplit(url)
    found = [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, unquote(userinfo.partition(":")[2])]
    return sorted({value for value in found if len(value) >= 4}, key=len, reverse=True)


def retry_after_s(value: str | None, *, cap: float = MAX_RETRY_AFTER_S,
                  now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, at most ``cap``; ``None`` if absent or bad.

    Accepts delta-seconds (fractional too, as some servers send) and HTTP dates in any zone;
    a date in "-0000" (zone unknown, RFC 5322) is read as UTC.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), cap)


def backoff_s(attempt: int, *, base_s: float, max_s: float, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
    """Wait before retry ``attempt`` (0-based): ``base_s * 2**attempt`` up to ``max_s``, times a
    random 0.5..1 so parallel workers spread out, and never less than the server asked."""
    backoff = min(max_s, base_s * 2**attempt) * (0.5 + 0.5 * (rng or random).random())
    return backoff if retry_after is None else max(backoff, retry_after)


class _Readable(Protocol):
    def read(self, amt: int, /) -> bytes: ...


def read_limited(response: _Readable, limit: int, what: str) -> bytes:
    """The whole body of ``response``, refusing (RemoteError) one larger than ``limit`` bytes.

    ``what`` names the body in the message (a redacted URL, never a secret).
    """
    length = getattr(response, "headers", None) and response.headers.get("Content-Length")
    if length and length.strip().isdigit() and int(length) > limit:
        raise _too_large(what, limit)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = response.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise _too_large(what, limit)
    return b"".join(chunks)


def _too_large(what: str, limit: int) -> RemoteError:
    return RemoteError(f"{what} sent more than {limit / 2**20:g} MB, more than any valid answer: "
                       "check that the URL points at the right server")

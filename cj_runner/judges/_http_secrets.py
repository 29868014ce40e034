"""Scrubbing an API key out of text and bodies, in every form a server might echo it.

No message of an HTTP judge ever contains the API key: every message goes through
:func:`scrub` (see :mod:`cj_runner.judges._http`).
"""

from __future__ import annotations

import base64
import functools
import re
import urllib.parse


def _secret_forms(secret: str) -> tuple[list[str], list[str]]:
    """The forms of ``secret`` a server might echo: ``(case-insensitive, exact)``.

    Case-insensitive: the key itself (also upper- or lower-cased) and URL-encoded. Exact:
    its base64 and URL-safe base64, at each of the three alignments it can have inside a
    longer encoded text (only the characters that depend on the key alone).
    """
    loose = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    exact: set[str] = set()
    raw = secret.encode("utf-8")
    for offset in range(3):
        padded = b"\0" * offset + raw
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(padded).decode("ascii").rstrip("=")
            start = 4 if offset else 0  # the first group mixes in the bytes before the key
            end = len(text) - (len(text) % 4 or 4)  # the last group may mix in bytes after it
            middle = text[start:end]
            if len(middle) >= 8:
                exact.add(middle)
    return sorted(loose, key=len, reverse=True), sorted(exact, key=len, reverse=True)


@functools.lru_cache(maxsize=8)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    loose, exact = _secret_forms(secret)
    parts = [f"(?i:{re.escape(form)})" for form in loose] + [re.escape(form) for form in exact]
    return re.compile("|".join(parts))


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` a server might echo (itself in any case,
    URL-encoded, base64) replaced by ``***``."""
    if not secret or len(secret) < 4:
        return text.replace(secret, "***") if secret else text
    return _secret_pattern(secret).sub("***", text)


def scrub_bytes(body: bytes, secret: str | None) -> bytes:
    """:func:`scrub` for a response body (UTF-8; other bytes pass through unchanged)."""
    if not secret:
        return body
    text = body.decode("utf-8", errors="surrogateescape")
    cleaned = scrub(text, secret)
    if cleaned is text or cleaned == text:
        return body
    return cleaned.encode("utf-8", errors="surrogateescape")

"""Whatever a judge returns is made storable before it reaches the database.

A judge's answer is data from outside: a lone UTF-16 surrogate (``"\\ud83d"`` in a JSON
string) cannot be encoded as UTF-8 and a NUL cannot be stored in a PostgreSQL text column;
either would make the whole group commit fail. So every text of a stored attempt is
cleaned first: each lone surrogate and each NUL becomes U+FFFD (visible, so a reader sees
that something was replaced), and a justification longer than
:data:`MAX_JUSTIFICATION_CHARS` is cut, with a marker saying how much was cut.

Token counts are checked where they enter (:func:`valid_token_count`): a count that is not
a non-negative integer of at most :data:`MAX_TOKEN_COUNT` is an error of its own kind
(``bad_usage``), never an overflow in the database.
"""

from __future__ import annotations

import re
from typing import Any

#: The longest justification stored; longer ones are cut with :func:`cut_marker`.
MAX_JUSTIFICATION_CHARS = 8000
#: The longest error message stored.
MAX_ERROR_CHARS = 2000
#: The largest token count believed (2**53: exact in a double, far above any real call).
MAX_TOKEN_COUNT = 2**53

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD.

    A surrogate *pair* (two code points that together make one character, as a
    ``surrogatepass`` decoder might leave them) is replaced too: Python strings of valid
    Unicode never hold surrogates, so any surrogate here is a broken answer.
    """
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def cut_marker(removed: int) -> str:
    """What replaces the end of a text that was cut."""
    return f" [... {removed} more characters cut]"


def cut_text(text: str, limit: int) -> str:
    """``text``, or its first characters and a marker when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(cut_marker(len(text))))
    return text[:keep] + cut_marker(len(text) - keep)


def storable_justification(text: str | None) -> str | None:
    """A justification ready to store: cleaned and cut to :data:`MAX_JUSTIFICATION_CHARS`."""
    if text is None:
        return None
    return cut_text(storable_text(text), MAX_JUSTIFICATION_CHARS)


def storable_message(text: str | None) -> str | None:
    """An error message ready to store: cleaned and cut to :data:`MAX_ERROR_CHARS`."""
    if text is None:
        return None
    return cut_text(storable_text(text), MAX_ERROR_CHARS)


def valid_token_count(value: Any) -> bool:
    """Whether ``value`` is a believable token count (an int in 0..MAX_TOKEN_COUNT)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT

"""The text rules of every input file (see :mod:`cj_runner.inputs`): strict UTF-8, no NUL,
a size cap, normalised line endings, not empty; the checksum; essay ids; paths kept
inside a folder. A problem is a :class:`_Bad` until the caller adds where it happened.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from pathlib import Path

from cj_runner.errors import InputError

#: Largest essay (or instructions/prompt/rubric file) accepted, in bytes of UTF-8.
MAX_ESSAY_BYTES = 2 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


class _Bad(Exception):
    """A problem with a value; the caller adds where it happened.

    ``offset`` is the byte offset of a decoding problem, if that is what it is.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def checksum(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 encoding of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _decode(data: bytes) -> str:
    """Strict UTF-8 without NUL bytes; byte offsets in messages count from the file start."""
    offset = len(_BOM) if data.startswith(_BOM) else 0
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _Bad(f"contains a NUL byte at byte {nul} (a binary file?)", nul)
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start + offset
        raise _Bad(f"not valid UTF-8 at byte {at}", at) from None


def _clean(text: str) -> str:
    """Normalise line endings, strip; refuse empty, NUL and oversized text."""
    if "\x00" in text:
        raise _Bad("contains a NUL character")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise _Bad("the essay is empty")
    size = len(text.encode("utf-8"))
    if size > MAX_ESSAY_BYTES:
        raise _Bad(f"the text is {size:,} bytes; at most {MAX_ESSAY_BYTES:,} are allowed")
    return text


def _read_bytes(path: Path, limit: int | None) -> bytes:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise _Bad("is a folder, not a file")
        size = info.st_size
        # A little slack for a BOM and trailing whitespace; _clean checks the text itself.
        if limit is not None and size > limit + 4096:
            raise _Bad(f"is {size:,} bytes; at most {limit:,} are allowed")
        return path.read_bytes()
    except FileNotFoundError:
        raise _Bad("file not found") from None
    except OSError as exc:
        raise _Bad(f"cannot read: {exc.strerror or exc}") from None


def _text_file(path: Path) -> str:
    return _clean(_decode(_read_bytes(path, MAX_ESSAY_BYTES)))


def read_essay_text(path: Path) -> str:
    """Read one essay file under the module's text rules.

    Raises:
        InputError: missing, unreadable, too large, not UTF-8, NUL bytes, or empty.
    """
    try:
        return _text_file(path)
    except _Bad as exc:
        raise InputError(f"{path}: {exc}") from None


def read_optional_text(path: Path | None) -> str:
    """Read an instructions, student prompt or rubric file; ``None`` gives ``""``.

    The same rules as essays apply; an empty file is refused (leave the option out instead).
    """
    if path is None:
        return ""
    return read_essay_text(path)


def _essay_id(raw: str) -> str:
    essay_id = unicodedata.normalize("NFC", raw.strip())
    if not essay_id:
        raise _Bad("the essay id is empty")
    if any(unicodedata.category(ch) == "Cc" for ch in essay_id):
        raise _Bad(f"the essay id {essay_id!r} contains a control character")
    return essay_id


def _inside(base: Path, raw: str) -> tuple[Path, str]:
    """Resolve ``raw`` (relative to ``base``) lexically; refuse anything outside ``base``.

    Returns the path to read and its normalised relative form. A symbolic link is
    followed only when its target is inside the folder too.
    """
    text = raw.strip().replace("\\", "/")
    if not text:
        raise _Bad("the path is empty")
    root = Path(os.path.normpath(base.absolute()))
    full = Path(os.path.normpath(root / Path(text).expanduser()))
    if full == root or not full.is_relative_to(root):
        raise _Bad(f"path '{raw.strip()}' is outside the manifest's folder {base}")
    _check_target(root, full)
    return full, full.relative_to(root).as_posix()


def _check_target(root: Path, full: Path) -> None:
    """Refuse ``full`` when it resolves (through symbolic links) outside ``root``."""
    target = full.resolve()
    if not target.is_relative_to(root.resolve()):
        raise _Bad(f"it is a link to {target}, outside the folder {root}")

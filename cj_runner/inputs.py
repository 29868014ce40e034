"""Reading essays, inventories, anchor manifests and assignment texts (spec §2).

Every problem raises :class:`cj_runner.errors.InputError` with one line naming the file
and, for manifests, the row (CSV: ``row N`` counting the header as row 1, so it matches a
spreadsheet and, without multi-line cells, the line number; JSONL: ``line N``) and the
field. Nothing is judged or stored here.

Text rules, the same for every file: strict UTF-8 (a byte-order mark is dropped), no NUL
bytes, at most :data:`MAX_ESSAY_BYTES`; line endings are normalised to ``\\n`` and
surrounding whitespace is stripped; what remains must not be empty. The checksum is the
SHA-256 of that text's UTF-8 bytes, so the same essay saved with CRLF or a BOM keeps its
checksum. Essay ids are stripped and NFC-normalised; spaces and any letters are allowed,
control characters are not.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cj_runner.core.models import Essay, GradeScale
from cj_runner.errors import InputError

#: Largest essay (or instructions/prompt/rubric file) accepted, in bytes of UTF-8.
MAX_ESSAY_BYTES = 2 * 1024 * 1024
ESSAY_SUFFIXES = (".txt", ".md")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
ANCHOR_MANIFEST = "anchors.csv"

_BOM = b"\xef\xbb\xbf"


class _Bad(Exception):
    """A problem with a value; the caller adds where it happened.

    ``offset`` is the byte offset of a decoding problem, if that is what it is.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Inventory:
    """The student essays of one inventory, in inventory order."""

    essays: tuple[Essay, ...]
    source: Path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnchorInput:
    """One row of an anchor manifest with its essay text read and checked."""

    file: str
    grade: str
    text: str
    checksum: str
    metadata: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- text


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


# --------------------------------------------------------------------------- ids, paths


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


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class _Row:
    where: str  # "row 3" / "line 3"
    cells: dict[str, Any]


def _manifest_text(path: Path) -> str:
    try:
        data = _read_bytes(path, None)
    except _Bad as exc:
        raise InputError(f"{path}: {exc}") from None
    try:
        text = _decode(data)
    except _Bad as exc:
        # Give the line too: a manifest is a text file people edit.
        line = data[: exc.offset or 0].count(b"\n") + 1
        raise InputError(f"{path}: {exc} (line {line})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _delimiter(first_line: str) -> str:
    if "," in first_line:
        return ","
    if ";" in first_line:
        return ";"
    return "\t" if "\t" in first_line else ","


def _csv_rows(path: Path) -> tuple[list[str], list[_Row]]:
    text = _manifest_text(path)
    if csv.field_size_limit() < MAX_ESSAY_BYTES + 4096:
        csv.field_size_limit(MAX_ESSAY_BYTES + 4096)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n")[0]))
    rows: list[_Row] = []
    header: list[str] | None = None
    line = 0
    number = 0
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            number += 1
            where = f"row {number}" + (f" (line {start})" if start != number else "")
            if header is None:
                header = [c.strip() for c in cells]
                _check_header(path, header)
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"{path} {where}: {len(cells)} fields, but the header has {len(header)}"
                )
            rows.append(_Row(where, dict(zip(header, cells, strict=True))))
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise InputError(f"{path}: the manifest is empty (no header row)")
    return header, rows


def read_csv_table(path: Path) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Read a CSV file under the manifest rules (UTF-8, delimiter sniffed from the header,
    blank rows skipped, named and unique columns, one field per column).

    Returns:
        The header and, per data row, where it is (``"row N"``) and its cells by column.

    Raises:
        InputError: one line naming the file and the row.
    """
    header, rows = _csv_rows(path)
    return header, [(row.where, dict(row.cells)) for row in rows]


def _check_header(path: Path, header: list[str]) -> None:
    for i, name in enumerate(header, start=1):
        if not name:
            raise InputError(f"{path} row 1: column {i} has no name")
        if header.index(name) != i - 1:
            raise InputError(f"{path} row 1: column '{name}' appears twice")


def _metadata_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    text = _manifest_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise InputError(f"{path} line {number}: expected a JSON object {{...}}")
        yield _Row(f"line {number}", value)


def _field_str(path: Path, row: _Row, name: str) -> str:
    value = row.cells.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and name == "essay_id":
        return str(value)
    raise InputError(f"{path} {row.where}, field '{name}': expected a string")


# --------------------------------------------------------------------------- inventory


def load_inventory(path: Path) -> Inventory:
    """Load the student essays of an inventory.

    ``path`` is a folder of ``.txt``/``.md`` files (the id is the file stem; other files
    and hidden files are ignored), or a ``.csv``/``.jsonl`` manifest with ``essay_id`` and
    ``text`` or ``path`` (relative to the manifest's folder, never outside it); other
    columns are kept as string metadata. Duplicate texts under different ids give a warning.

    Raises:
        InputError: one line naming the file, row and field of the first problem.
    """
    if path.is_dir():
        essays, warnings = _folder_essays(path)
    elif not path.exists():
        raise InputError(f"{path}: inventory not found")
    elif path.suffix.lower() == ".csv":
        header, rows = _csv_rows(path)
        _require_columns(path, header)
        essays, warnings = _manifest_essays(path, rows), []
    elif path.suffix.lower() == ".jsonl":
        essays, warnings = _manifest_essays(path, _jsonl_rows(path)), []
    else:
        raise InputError(
            f"{path}: an inventory is a folder of .txt/.md files or a .csv/.jsonl manifest"
        )
    warnings.extend(_duplicate_text_warnings(essays))
    return Inventory(essays=tuple(essays), source=path, warnings=tuple(warnings))


def _folder_essays(folder: Path) -> tuple[list[Essay], list[str]]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None
    files = [
        p
        for p in entries
        if not p.name.startswith(".") and p.suffix.lower() in ESSAY_SUFFIXES and p.is_file()
    ]
    if not files:
        raise InputError(f"{folder}: no .txt or .md essay files in this folder")
    warnings = [
        f"{folder}: {p.name} is ignored; pass the manifest itself to use its columns"
        for p in entries
        if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file()
    ]
    skipped = [
        p.name
        for p in entries
        if not p.name.startswith(".")
        and p.suffix.lower() not in (*ESSAY_SUFFIXES, *MANIFEST_SUFFIXES)
        and p.is_file()
    ]
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.append(
            f"{folder}: skipped {len(skipped)} file(s) that are not .txt or .md: {shown}"
        )
    seen: dict[str, Path] = {}
    essays: list[Essay] = []
    for file in files:
        try:
            essay_id = _essay_id(file.stem)
            _check_target(folder.absolute(), file.absolute())
            text = _text_file(file)
        except _Bad as exc:
            raise InputError(f"{file}: {exc}") from None
        if essay_id in seen:
            raise InputError(
                f"{folder}: {seen[essay_id].name} and {file.name} have the same essay id "
                f"'{essay_id}'"
            )
        seen[essay_id] = file
        essays.append(Essay(essay_id=essay_id, text=text, checksum=checksum(text)))
    return essays, warnings


def _require_columns(path: Path, header: Sequence[str]) -> None:
    if "essay_id" not in header:
        raise InputError(f"{path}: missing column 'essay_id' (columns found: {', '.join(header)})")
    if "text" not in header and "path" not in header:
        raise InputError(
            f"{path}: missing column 'text' or 'path' (columns found: {', '.join(header)})"
        )


def _manifest_essays(path: Path, rows: Iterator[_Row] | list[_Row]) -> list[Essay]:
    base = path.parent
    first_row: dict[str, str] = {}
    essays: list[Essay] = []
    for row in rows:
        if "essay_id" not in row.cells:
            raise InputError(f"{path} {row.where}: missing field 'essay_id'")
        try:
            essay_id = _essay_id(_field_str(path, row, "essay_id"))
        except _Bad as exc:
            raise InputError(f"{path} {row.where}, field 'essay_id': {exc}") from None
        if essay_id in first_row:
            raise InputError(
                f"{path}: duplicate essay id '{essay_id}' ({first_row[essay_id]} and {row.where})"
            )
        first_row[essay_id] = row.where
        text = _row_text(path, row, base)
        metadata = {
            str(k).strip(): _metadata_value(v)
            for k, v in row.cells.items()
            if k not in ("essay_id", "text", "path")
        }
        essays.append(
            Essay(essay_id=essay_id, text=text, checksum=checksum(text), metadata=metadata)
        )
    if not essays:
        raise InputError(f"{path}: the manifest lists no essays")
    return essays


def _row_text(path: Path, row: _Row, base: Path) -> str:
    inline = _field_str(path, row, "text")
    file = _field_str(path, row, "path").strip()
    if inline.strip() and file:
        raise InputError(f"{path} {row.where}: both 'text' and 'path' are given; keep one")
    if not inline.strip() and not file:
        raise InputError(f"{path} {row.where}: 'text' and 'path' are both empty or missing")
    if inline.strip():
        try:
            return _clean(inline)
        except _Bad as exc:
            raise InputError(f"{path} {row.where}, field 'text': {exc}") from None
    try:
        full, _ = _inside(base, file)
        return _text_file(full)
    except _Bad as exc:
        raise InputError(f"{path} {row.where}, field 'path' ({file}): {exc}") from None


def _duplicate_text_warnings(essays: Sequence[Essay]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for essay in essays:
        groups.setdefault(essay.checksum, []).append(essay.essay_id)
    warnings = []
    for digest, ids in groups.items():
        if len(ids) > 1:
            shown = ", ".join(f"'{i}'" for i in ids[:5])
            more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
            warnings.append(f"essays {shown}{more} have the same text (sha256 {digest[:12]})")
    return warnings


# --------------------------------------------------------------------------- anchors


def load_anchor_manifest(path: Path, scale: GradeScale) -> list[AnchorInput]:
    """Read an anchor manifest: a folder holding ``anchors.csv``, or such a CSV itself.

    Columns ``file`` (relative to the CSV's folder, never outside it) and ``grade`` (a
    grade of ``scale``); other columns are kept as metadata.

    Raises:
        InputError: missing manifest or column, empty cell, unknown grade (listing the
            scale's grades), duplicate file, unreadable or empty essay, or two rows with
            the same text.
    """
    manifest = path / ANCHOR_MANIFEST if path.is_dir() else path
    if path.is_dir() and not manifest.is_file():
        raise InputError(f"{path}: no {ANCHOR_MANIFEST} in this folder")
    if not manifest.exists():
        raise InputError(f"{manifest}: anchor manifest not found")
    header, rows = _csv_rows(manifest)
    missing = [c for c in ("file", "grade") if c not in header]
    if missing:
        raise InputError(
            f"{manifest}: missing column '{missing[0]}' (columns found: {', '.join(header)})"
        )
    anchors: list[AnchorInput] = []
    by_file: dict[str, str] = {}
    by_checksum: dict[str, tuple[str, str]] = {}
    for row in rows:
        anchor = _anchor_row(manifest, row, scale)
        if anchor.file in by_file:
            raise InputError(
                f"{manifest}: file '{anchor.file}' is listed twice ({by_file[anchor.file]} and "
                f"{row.where})"
            )
        by_file[anchor.file] = row.where
        if anchor.checksum in by_checksum:
            other_row, other_file = by_checksum[anchor.checksum]
            raise InputError(
                f"{manifest}: ambiguous anchor: {other_row} ({other_file}) and {row.where} "
                f"({anchor.file}) have the same text"
            )
        by_checksum[anchor.checksum] = (row.where, anchor.file)
        anchors.append(anchor)
    if not anchors:
        raise InputError(f"{manifest}: the manifest lists no anchors")
    return anchors


def _anchor_row(manifest: Path, row: _Row, scale: GradeScale) -> AnchorInput:
    raw_file = str(row.cells["file"]).strip()
    if not raw_file:
        raise InputError(f"{manifest} {row.where}, field 'file': the file name is empty")
    grade = str(row.cells["grade"]).strip()
    where = f"{manifest} {row.where} (file '{raw_file}'), field 'grade'"
    if not grade:
        raise InputError(f"{where}: the grade is empty")
    if grade not in scale.grades:
        raise InputError(
            f"{where}: unknown grade '{grade}' for grade scale {scale.name} "
            f"(valid grades: {', '.join(scale.grades)})"
        )
    try:
        full, relative = _inside(manifest.parent, raw_file)
        text = _text_file(full)
    except _Bad as exc:
        raise InputError(f"{manifest} {row.where}, field 'file' ({raw_file}): {exc}") from None
    metadata = {k: _metadata_value(v) for k, v in row.cells.items() if k not in ("file", "grade")}
    return AnchorInput(
        file=relative, grade=grade, text=text, checksum=checksum(text), metadata=metadata
    )

"""The student essays of an inventory (see :mod:`cj_runner.inputs`): a folder of
``.txt``/``.md`` files or a CSV/JSONL manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cj_runner.core.models import Essay
from cj_runner.errors import InputError
from cj_runner.inputs.manifests import _csv_rows, _field_str, _jsonl_rows, _metadata_value, _Row
from cj_runner.inputs.text import (
    _Bad,
    _check_target,
    _clean,
    _essay_id,
    _inside,
    _text_file,
    checksum,
)

ESSAY_SUFFIXES = (".txt", ".md")
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Inventory:
    """The student essays of one inventory, in inventory order."""

    essays: tuple[Essay, ...]
    source: Path
    warnings: tuple[str, ...] = ()


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

"""Manifest rows (see :mod:`cj_runner.inputs`): CSV (delimiter sniffed from the header,
``row N`` as a spreadsheet counts) and JSONL (``line N``), each a :class:`_Row` of cells.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cj_runner.errors import InputError
from cj_runner.inputs.text import MAX_ESSAY_BYTES, _Bad, _decode, _read_bytes


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

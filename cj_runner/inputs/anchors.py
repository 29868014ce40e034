"""Anchor manifests (see :mod:`cj_runner.inputs`): ``file`` and ``grade`` per row, the
essays read under the same text rules, duplicates refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cj_runner.core.models import GradeScale
from cj_runner.errors import InputError
from cj_runner.inputs.manifests import _csv_rows, _metadata_value, _Row
from cj_runner.inputs.text import _Bad, _inside, _text_file, checksum

ANCHOR_MANIFEST = "anchors.csv"


@dataclass(frozen=True)
class AnchorInput:
    """One row of an anchor manifest with its essay text read and checked."""

    file: str
    grade: str
    text: str
    checksum: str
    metadata: Mapping[str, str] = field(default_factory=dict)


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

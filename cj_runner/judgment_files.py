"""Reading a file of judgments made outside cj-runner (a human panel, another tool).

A CSV with a header and the columns ``essay_a``, ``essay_b``, ``winner``, ``judge`` and,
optionally, ``time``; other columns are kept with each judgment as provenance. One row is
one comparison: ``essay_a`` was shown in position A, ``essay_b`` in B (when the order is
unknown, either way is fine: the order effect of a judge whose pairs have no real order
is then about 0). ``winner`` is ``A`` or ``B`` (any case), or the id of the winning
essay. ``time`` is an ISO 8601 date-time (a time without a zone is taken as UTC).

Every row is checked before anything is stored; the first problem raises
:class:`cj_runner.errors.InputError` with one line naming the file, the row (the header
is row 1, as in a spreadsheet) and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cj_runner.errors import InputError
from cj_runner.inputs import read_csv_table

REQUIRED_COLUMNS: tuple[str, ...] = ("essay_a", "essay_b", "winner", "judge")
OPTIONAL_COLUMNS: tuple[str, ...] = ("time",)
MAX_JUDGE_ID = 200


@dataclass(frozen=True)
class ImportedJudgment:
    """One checked row: node indices in the batch, the winner position and its source."""

    a_idx: int
    b_idx: int
    winner: str  # "A" or "B"
    judge: str
    judged_at: datetime | None
    row: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgmentFile:
    """A checked judgments file: its rows, name and SHA-256 (of the bytes)."""

    judgments: tuple[ImportedJudgment, ...]
    name: str
    checksum: str

    @property
    def judges(self) -> tuple[str, ...]:
        """The judge ids, in order of first appearance."""
        return tuple(dict.fromkeys(j.judge for j in self.judgments))


def _time(value: str) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_judgments(
    path: Path,
    node_index: Mapping[str, int],
    *,
    reserved_judges: Sequence[str] = (),
    batch: str = "the batch",
) -> JudgmentFile:
    """Read and check a judgments file against the essays of a batch.

    Args:
        path: the CSV file.
        node_index: essay id -> node index in the batch (students and anchors).
        reserved_judges: judge ids the file may not use (the batch's own judges: imported
            judgments must be told apart from the ones cj-runner asked for).
        batch: how to name the batch in messages.

    Returns:
        A :class:`JudgmentFile`.

    Raises:
        InputError: the file cannot be read, a column is missing, no row, or a row has an
            unknown essay id, a pair of an essay with itself, a bad winner, an empty or
            reserved judge id, or a bad time.
    """
    header, rows = read_csv_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        need = ", ".join(REQUIRED_COLUMNS)
        raise InputError(
            f"{path} row 1: missing column '{missing[0]}' (a judgments file needs {need}; "
            "time is optional)"
        )
    if not rows:
        raise InputError(f"{path}: no judgments (only a header)")
    reserved = set(reserved_judges)
    extra = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    out: list[ImportedJudgment] = []
    for where, cells in rows:
        number = int(where.split()[1])
        ids = {}
        for column in ("essay_a", "essay_b"):
            essay = cells[column].strip()
            if not essay:
                raise InputError(f"{path} {where}, field '{column}': empty")
            if essay not in node_index:
                raise InputError(
                    f"{path} {where}, field '{column}': essay '{essay}' is not in {batch}"
                )
            ids[column] = essay
        if ids["essay_a"] == ids["essay_b"]:
            raise InputError(
                f"{path} {where}: essay_a and essay_b are the same essay '{ids['essay_a']}'"
            )
        raw = cells["winner"].strip()
        if raw.upper() in ("A", "B"):
            winner = raw.upper()
        elif raw == ids["essay_a"]:
            winner = "A"
        elif raw == ids["essay_b"]:
            winner = "B"
        else:
            raise InputError(
                f"{path} {where}, field 'winner': '{raw}' is neither A, B nor one of the "
                f"two essays ('{ids['essay_a']}', '{ids['essay_b']}')"
            )
        judge = cells["judge"].strip()
        if not judge:
            raise InputError(f"{path} {where}, field 'judge': empty")
        if len(judge) > MAX_JUDGE_ID or not judge.isprintable():
            raise InputError(
                f"{path} {where}, field 'judge': at most {MAX_JUDGE_ID} printable characters"
            )
        if judge in reserved:
            raise InputError(
                f"{path} {where}, field 'judge': '{judge}' is a judge of {batch} itself; "
                "give imported judgments judge ids of their own"
            )
        try:
            judged_at = _time(cells.get("time", ""))
        except ValueError:
            raise InputError(
                f"{path} {where}, field 'time': '{cells['time'].strip()}' is not an ISO 8601 "
                "date-time (e.g. 2025-03-14T09:30:00Z)"
            ) from None
        out.append(
            ImportedJudgment(
                a_idx=node_index[ids["essay_a"]],
                b_idx=node_index[ids["essay_b"]],
                winner=winner,
                judge=judge,
                judged_at=judged_at,
                row=number,
                metadata={c: cells[c] for c in extra},
            )
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return JudgmentFile(tuple(out), path.name, digest)

"""Plain, frozen data shared by the core, the store, the judges and the services.

Node indices: inside a batch every node (student essay or anchor) has an index
``0..n-1``; students come first in inventory order, then anchors in registration order.
An *ordered pair* ``(a, b)`` means node ``a`` is shown in position A and ``b`` in B.
An *edge* is the unordered pair, always written ``(min, max)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Winner = Literal["A", "B"]


class Mode(StrEnum):
    """Which phase produced a comparison (spec §1)."""

    COVERAGE = "coverage"
    RESAMPLING = "resampling"
    AUDIT = "audit"


class BatchStatus(StrEnum):
    """Life cycle of a batch."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    INTERRUPTED = "INTERRUPTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class AttemptStatus(StrEnum):
    """Status of one stored judge call (one row of ``comparisons``).

    ``planned``: chosen for a wave, not sent yet (not counted against the budget).
    ``released``: planned, and its first call may go out without waiting for its ``sent``
    row to commit; after a crash it counts as sent (``lost``), after a clean stop as
    planned.
    ``sent``: the call went out and no answer is stored yet (in flight, or lost in a crash).
    ``success``: a verdict is stored. ``retried``: a transient error; another attempt
    followed. ``failed``: the comparison's last attempt failed; no more attempts.
    ``lost``: the call was in flight when the process died (counted as sent).
    ``cancelled``: planned but never sent (the budget ran out first).
    """

    PLANNED = "planned"
    RELEASED = "released"
    SENT = "sent"
    SUCCESS = "success"
    RETRIED = "retried"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


def edge(a: int, b: int) -> tuple[int, int]:
    """The unordered edge of an ordered pair, as ``(min, max)``."""
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True, slots=True)
class Essay:
    """A student essay from the inventory."""

    essay_id: str
    text: str
    checksum: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Anchor:
    """An essay with a known grade, registered for an assignment."""

    anchor_id: str
    grade: str
    text: str
    checksum: str
    source_name: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GradeScale:
    """An ordered list of grades, lowest first, with optional prior probabilities."""

    name: str
    grades: tuple[str, ...]
    priors: tuple[float, ...] | None = None

    def index(self, grade: str) -> int:
        """Position of ``grade`` on the scale (0 = lowest)."""
        return self.grades.index(grade)


@dataclass(frozen=True, slots=True)
class Node:
    """An essay or anchor inside a batch."""

    index: int
    essay_id: str
    is_anchor: bool
    checksum: str
    text: str
    known_grade: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedPair:
    """One comparison chosen by pair selection: ``a`` in position A, ``b`` in B."""

    a: int
    b: int

    @property
    def edge(self) -> tuple[int, int]:
        return edge(self.a, self.b)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A successful comparison as the scoring core sees it."""

    a: int
    b: int
    winner: Winner
    mode: Mode = Mode.COVERAGE
    wave: int = 0

"""Plain records of stored rows: what the store reads and writes, free of SQLAlchemy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AssignmentRecord:
    """An assignment as stored."""

    id: str
    grade_scale: str
    grades: tuple[str, ...]
    instructions: str = ""
    student_prompt: str = ""
    rubric: str = ""


@dataclass(frozen=True)
class AnchorRecord:
    """A registered anchor with its text."""

    id: int
    assignment_id: str
    grade: str
    checksum: str
    source_name: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewAnchor:
    """An anchor to register."""

    source_name: str
    grade: str
    text: str
    checksum: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisterResult:
    """What ``register_anchors`` changed."""

    added: int
    unchanged: int
    removed: int
    assignment_changed: bool
    updated: tuple[str, ...] = ()
    """What changed on an existing assignment: ``grade scale``, ``instructions``,
    ``student prompt``, ``rubric``, and ``grade of FILE`` per re-graded anchor."""
    kept: int = 0
    """Registered anchors not in this manifest, kept because ``replace`` was not set."""


@dataclass(frozen=True)
class NewNode:
    """A node to create in a new batch (index = position in the list)."""

    essay_id: str
    is_anchor: bool
    checksum: str
    text: str
    known_grade: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRecord:
    """A batch row joined with its state."""

    id: str
    name: str | None
    assignment_id: str | None
    status: str
    stop_reason: str | None
    seed: int
    settings: dict[str, Any]
    judge: dict[str, Any]
    judge_name: str
    inventory: str
    plan: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    state: dict[str, Any]


@dataclass(frozen=True)
class NodeRecord:
    """A node row with its text."""

    idx: int
    essay_id: str
    is_anchor: bool
    known_grade: str | None
    checksum: str
    text: str
    metadata: dict[str, Any]
    score: float | None
    se: float | None
    comparison_count: int
    a_count: int
    b_count: int
    infit: float | None
    outfit: float | None

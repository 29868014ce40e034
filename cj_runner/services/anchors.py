"""Anchor registration: read the manifest, check grades, store idempotently by checksum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cj_runner.config import load_grade_scale
from cj_runner.inputs import load_anchor_manifest, read_optional_text
from cj_runner.storage import Store
from cj_runner.storage import repository as repo


@dataclass(frozen=True)
class AnchorRegistration:
    """A validated registration, ready to store."""

    assignment: repo.AssignmentRecord
    anchors: list[repo.NewAnchor]
    texts: dict[str, str | None]


def read_registration(
    assignment_id: str,
    grade_scale: str,
    path: Path,
    *,
    instructions: Path | None = None,
    student_prompt: Path | None = None,
    rubric: Path | None = None,
) -> AnchorRegistration:
    """Validate every input file (no database touched); raises a one-line UserError."""
    scale = load_grade_scale(grade_scale)
    rows = load_anchor_manifest(path, scale)
    texts = {
        "instructions": read_optional_text(instructions) if instructions else None,
        "student_prompt": read_optional_text(student_prompt) if student_prompt else None,
        "rubric": read_optional_text(rubric) if rubric else None,
    }
    return AnchorRegistration(
        assignment=repo.AssignmentRecord(
            id=assignment_id, grade_scale=scale.name, grades=scale.grades
        ),
        anchors=[
            repo.NewAnchor(
                source_name=row.file,
                grade=row.grade,
                text=row.text,
                checksum=row.checksum,
                metadata=dict(row.metadata),
            )
            for row in rows
        ],
        texts=texts,
    )


async def register(
    store: Store, registration: AnchorRegistration, *, replace: bool = False
) -> repo.RegisterResult:
    """Store the registration in one transaction."""
    return await repo.register_anchors(
        store,
        registration.assignment,
        registration.anchors,
        replace=replace,
        update_texts=registration.texts,
    )

"""Assignments and their anchors. Every write is one transaction: all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from cj_runner.errors import InputError
from cj_runner.storage.engine import Store
from cj_runner.storage.records import AnchorRecord, AssignmentRecord, NewAnchor, RegisterResult
from cj_runner.storage.tables import T_ANCHORS, T_ASSIGNMENTS, T_TEXTS, put_texts, utcnow


async def get_assignment(store: Store, assignment_id: str) -> AssignmentRecord | None:
    """The assignment, or ``None``."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(select(T_ASSIGNMENTS).where(T_ASSIGNMENTS.c.id == assignment_id))
        ).first()
    if row is None:
        return None
    return AssignmentRecord(
        id=row.id,
        grade_scale=row.grade_scale,
        grades=tuple(row.grades),
        instructions=row.instructions,
        student_prompt=row.student_prompt,
        rubric=row.rubric,
    )


async def register_anchors(
    store: Store,
    assignment: AssignmentRecord,
    anchors: Sequence[NewAnchor],
    *,
    replace: bool = False,
    update_texts: dict[str, str | None] | None = None,
) -> RegisterResult:
    """Create/update the assignment and add anchors not yet registered (by checksum).

    ``update_texts`` holds instructions/student_prompt/rubric given on this call (``None``
    = keep the stored one). With ``replace``, anchors of the assignment that are not in
    ``anchors`` are removed. A different grade scale for an existing assignment is refused
    unless ``replace`` is set. Registering the same input twice changes nothing.
    """
    now = utcnow()
    update_texts = update_texts or {}
    async with store.engine.begin() as conn:
        row = (
            await conn.execute(select(T_ASSIGNMENTS).where(T_ASSIGNMENTS.c.id == assignment.id))
        ).first()
        changed = False
        updated: list[str] = []
        if row is None:
            await conn.execute(
                insert(T_ASSIGNMENTS).values(
                    id=assignment.id,
                    grade_scale=assignment.grade_scale,
                    grades=list(assignment.grades),
                    instructions=update_texts.get("instructions") or "",
                    student_prompt=update_texts.get("student_prompt") or "",
                    rubric=update_texts.get("rubric") or "",
                    created_at=now,
                )
            )
            changed = True
        else:
            if row.grade_scale != assignment.grade_scale and not replace:
                raise InputError(
                    f"assignment {assignment.id!r} is registered with grade scale "
                    f"{row.grade_scale!r}, not {assignment.grade_scale!r} (use --replace)"
                )
            values: dict[str, Any] = {}
            if row.grade_scale != assignment.grade_scale:
                values["grade_scale"] = assignment.grade_scale
                values["grades"] = list(assignment.grades)
            for key, text in update_texts.items():
                if text is not None and getattr(row, key) != text:
                    values[key] = text
            updated.extend(k.replace("_", " ") for k in values if k != "grades")
            if values:
                await conn.execute(
                    update(T_ASSIGNMENTS)
                    .where(T_ASSIGNMENTS.c.id == assignment.id)
                    .values(**values)
                )
                changed = True
        existing = {
            r.checksum: r
            for r in await conn.execute(
                select(T_ANCHORS).where(T_ANCHORS.c.assignment_id == assignment.id)
            )
        }
        await put_texts(conn, ((a.checksum, a.text) for a in anchors))
        added = unchanged = 0
        for anchor in anchors:
            old = existing.get(anchor.checksum)
            if old is not None and old.grade == anchor.grade:
                unchanged += 1
                continue
            if old is not None:
                if not replace:
                    raise InputError(
                        f"anchor {anchor.source_name!r} is registered with grade {old.grade!r},"
                        f" not {anchor.grade!r} (use --replace)"
                    )
                await conn.execute(
                    update(T_ANCHORS)
                    .where(T_ANCHORS.c.id == old.id)
                    .values(grade=anchor.grade, source_name=anchor.source_name)
                )
                updated.append(f"grade of {anchor.source_name} {old.grade} -> {anchor.grade}")
                added += 1
                continue
            await conn.execute(
                insert(T_ANCHORS).values(
                    assignment_id=assignment.id,
                    grade=anchor.grade,
                    checksum=anchor.checksum,
                    source_name=anchor.source_name,
                    metadata_json=dict(anchor.metadata),
                    created_at=now,
                )
            )
            added += 1
        removed = kept = 0
        keep = {a.checksum for a in anchors}
        gone = [r.id for c, r in existing.items() if c not in keep]
        if replace and gone:
            await conn.execute(delete(T_ANCHORS).where(T_ANCHORS.c.id.in_(gone)))
            removed = len(gone)
        elif gone:
            kept = len(gone)
    return RegisterResult(added, unchanged, removed, changed, tuple(updated), kept)


async def list_anchors(store: Store, assignment_id: str | None = None) -> list[AnchorRecord]:
    """Anchors (with text), ordered by assignment and registration."""
    query = (
        select(T_ANCHORS, T_TEXTS.c.text)
        .join(T_TEXTS, T_TEXTS.c.checksum == T_ANCHORS.c.checksum)
        .order_by(T_ANCHORS.c.assignment_id, T_ANCHORS.c.id)
    )
    if assignment_id is not None:
        query = query.where(T_ANCHORS.c.assignment_id == assignment_id)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        AnchorRecord(
            id=r.id,
            assignment_id=r.assignment_id,
            grade=r.grade,
            checksum=r.checksum,
            source_name=r.source_name,
            text=r.text,
            metadata=dict(r.metadata_json or {}),
        )
        for r in rows
    ]

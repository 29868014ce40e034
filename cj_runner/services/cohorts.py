"""Enqueueing a cohort: one queued batch per class, with a shared assignment, profile and
judge.

A cohort comes from a folder or a cohort CSV:

* a **folder**: every sub-folder is a class (its essays; a ``manifest.csv`` or
  ``manifest.jsonl`` inside it is used when there is one), and every ``.csv``/``.jsonl``
  file directly in it is a class's manifest; the class id is the folder name or the file
  stem. Hidden entries are skipped.
* a **cohort CSV**: columns ``class_id`` and ``inventory`` (a class folder or manifest,
  relative to the CSV's folder).

Every class is read and validated before anything is written, and all batches are queued
in one transaction: on bad input nothing is enqueued.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

from cj_runner.config import ResolvedProfile, load_settings
from cj_runner.errors import InputError
from cj_runner.inputs import load_inventory
from cj_runner.judges.config import JudgeConfig
from cj_runner.services.batches import (
    LocalInputs,
    RunRequest,
    batch_fields,
    plan_summary,
    prepare,
    resolve_judge_config,
)
from cj_runner.storage import Store, queue

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class CohortClass:
    """One class of a cohort: its id and where its essays are."""

    class_id: str
    inventory: Path


@dataclass(frozen=True)
class EnqueueResult:
    """What ``enqueue`` did."""

    cohort: str
    batch_ids: list[str]
    classes: list[CohortClass]
    students: int
    profile: str
    judge: str
    warnings: list[str]


def _class_folder_inventory(folder: Path) -> Path:
    for name in ("manifest.csv", "manifest.jsonl"):
        if (folder / name).is_file():
            return folder / name
    return folder


def _check_class_id(where: str, class_id: str, seen: dict[str, str]) -> None:
    if not class_id or class_id != class_id.strip() or "/" in class_id or len(class_id) > 150:
        raise InputError(f"{where}: class id {class_id!r} must be 1-150 characters without '/'")
    if class_id in seen:
        raise InputError(f"{where}: duplicate class id {class_id!r} (also {seen[class_id]})")


def _from_folder(source: Path) -> list[CohortClass]:
    classes: list[CohortClass] = []
    seen: dict[str, str] = {}
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            class_id, inventory = entry.name, _class_folder_inventory(entry)
        elif entry.is_file() and entry.suffix.lower() in MANIFEST_SUFFIXES:
            class_id, inventory = entry.stem, entry
        else:
            continue
        _check_class_id(str(entry), class_id, seen)
        seen[class_id] = str(entry)
        classes.append(CohortClass(class_id, inventory))
    if not classes:
        raise InputError(f"{source}: no class folders or class manifests (.csv/.jsonl) in it")
    return classes


def _from_csv(source: Path) -> list[CohortClass]:
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read the cohort CSV ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    for column in ("class_id", "inventory"):
        if column not in header:
            raise InputError(
                f"{source}: missing column {column!r} (a cohort CSV has class_id,inventory)"
            )
    classes: list[CohortClass] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{source} row {number}"
        class_id, inventory = row.get("class_id", ""), row.get("inventory", "")
        _check_class_id(where, class_id, seen)
        if not inventory:
            raise InputError(f"{where}, field 'inventory': empty")
        path = Path(inventory)
        path = path if path.is_absolute() else source.parent / path
        if not path.exists():
            raise InputError(f"{where}, field 'inventory': {path} does not exist")
        if path.is_dir():
            path = _class_folder_inventory(path)
        seen[class_id] = f"row {number}"
        classes.append(CohortClass(class_id, path))
    if not classes:
        raise InputError(f"{source}: the cohort CSV lists no classes")
    return classes


def discover_classes(source: Path) -> list[CohortClass]:
    """The classes of a cohort folder or cohort CSV (see the module docstring)."""
    if source.is_dir():
        return _from_folder(source)
    if not source.exists():
        raise InputError(f"{source}: cohort folder or CSV not found")
    if source.suffix.lower() != ".csv":
        raise InputError(f"{source}: a cohort is a folder of classes or a CSV (class_id,inventory)")
    return _from_csv(source)


def check_cohort_name(cohort: str) -> None:
    """A cohort name is 1-40 characters without '/' (it prefixes the batch names)."""
    if not cohort or cohort != cohort.strip() or "/" in cohort or len(cohort) > 40:
        raise InputError(f"--cohort: name {cohort!r} must be 1-40 characters without '/'")


@dataclass(frozen=True)
class CohortInputs:
    """What a cohort needs besides the database: its classes, settings and judge."""

    cohort: str
    classes: list[CohortClass]
    profile: ResolvedProfile
    judge_config: JudgeConfig


def cohort_inputs(cohort: str, source: Path, request: RunRequest) -> CohortInputs:
    """Check the cohort name, find its classes, load the shared profile and judge (no
    database touched). ``request`` holds the shared assignment, profile, judge and
    overrides; its ``inventory`` is replaced per class."""
    check_cohort_name(cohort)
    classes = discover_classes(source)
    profile = load_settings(request.profile, request.overrides, flag_values=request.flag_values)
    judge_config = resolve_judge_config(profile, request.judge, request.judge_overrides)
    return CohortInputs(cohort, classes, profile, judge_config)


async def enqueue_cohort(store: Store, inputs: CohortInputs, request: RunRequest) -> EnqueueResult:
    """Validate every class and queue one batch per class, in one transaction.

    Raises a one-line :class:`UserError` on bad input, with nothing written.
    """
    cohort = inputs.cohort
    items: list[queue.QueuedClass] = []
    students = 0
    warnings: list[str] = []
    for item in inputs.classes:
        class_request = replace(
            request, inventory=item.inventory, batch_name=queue.batch_name(cohort, item.class_id)
        )
        local = LocalInputs(inputs.profile, inputs.judge_config, load_inventory(item.inventory))
        prepared = await prepare(store, class_request, local)
        warnings.extend(f"class {item.class_id}: {w}" for w in prepared.inventory.warnings)
        students += prepared.students
        fields = batch_fields(prepared, plan_summary(prepared))
        items.append(queue.QueuedClass(item.class_id, fields))
    ids = await queue.enqueue(store, cohort, items)
    return EnqueueResult(
        cohort=cohort,
        batch_ids=ids,
        classes=inputs.classes,
        students=students,
        profile=inputs.profile.name,
        judge=inputs.judge_config.name,
        warnings=warnings,
    )

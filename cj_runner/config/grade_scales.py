"""Grade scales: named lists of grades (lowest first) with optional priors, in
``grade_scales.yaml`` on the profiles search path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cj_runner.config.lookup import _grade_scales_path, _load_yaml
from cj_runner.core.models import GradeScale
from cj_runner.errors import ConfigError

_SCALE_KEYS = ("grades", "priors", "description")
_PRIOR_TOLERANCE = 0.01


def _read_scales(path: Path | None) -> tuple[Path, dict[str, Any]]:
    path = path if path is not None else _grade_scales_path()
    data = _load_yaml(path, "grade scales file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"grade scales file {path} must map scale names to definitions")
    return path, data


def grade_scale_names(path: Path | None = None) -> list[str]:
    """Names of the grade scales in ``grade_scales.yaml`` (file order)."""
    _, data = _read_scales(path)
    return [str(k) for k in data]


def load_grade_scale(name: str, path: Path | None = None) -> GradeScale:
    """Load one grade scale from ``grade_scales.yaml`` (``path``, else the profiles folders).

    The scale is validated: at least two distinct non-empty grades (lowest first), and
    optional priors, one per grade, none negative, summing to 1 within 0.01 (they are
    renormalised to sum exactly to 1).

    Raises:
        ConfigError: unknown scale (listing the names) or an invalid definition, naming
            the file and the scale.
    """
    path, data = _read_scales(path)
    key = name.strip()
    if key not in data:
        names = ", ".join(str(k) for k in data) or "none"
        raise ConfigError(f"unknown grade scale '{name}' in {path} (available: {names})")
    return _parse_scale(key, data[key], path)


def _parse_scale(name: str, spec: Any, path: Path) -> GradeScale:
    where = f"grade scale '{name}' in {path}"
    if isinstance(spec, list):
        spec = {"grades": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with 'grades' (and optional 'priors')")
    unknown = [str(k) for k in spec if k not in _SCALE_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(_SCALE_KEYS)})"
        )
    raw_grades = spec.get("grades")
    if not isinstance(raw_grades, list) or len(raw_grades) < 2:
        raise ConfigError(f"{where}: 'grades' must be a list of at least two grades")
    grades: list[str] = []
    for raw in raw_grades:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ConfigError(f"{where}: grade {raw!r} must be a string (quote it in YAML)")
        grade = str(raw).strip()
        if not grade:
            raise ConfigError(f"{where}: a grade is empty")
        if grade in grades:
            raise ConfigError(f"{where}: duplicate grade '{grade}'")
        grades.append(grade)
    priors = _parse_priors(spec.get("priors"), len(grades), where)
    return GradeScale(name=name, grades=tuple(grades), priors=priors)


def _parse_priors(raw: Any, count: int, where: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'priors' must be a list of {count} numbers")
    if len(raw) != count:
        raise ConfigError(f"{where}: {len(raw)} priors for {count} grades; give one per grade")
    values: list[float] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ConfigError(f"{where}: prior {item!r} is not a number")
        if not math.isfinite(item) or item < 0:
            raise ConfigError(f"{where}: prior {item} must be a finite number >= 0")
        values.append(float(item))
    total = sum(values)
    if abs(total - 1.0) > _PRIOR_TOLERANCE:
        raise ConfigError(f"{where}: priors sum to {total:g}; they must sum to 1")
    return tuple(v / total for v in values)

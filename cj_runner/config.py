"""Settings, CJ profiles and grade scales (spec §3).

Effective settings are built in layers, later layers winning::

    defaults  <  profile YAML ``settings:``  <  env ``CJ_<NAME>``  <  ``--set NAME=VALUE``
              <  first-class command-line flags (already typed)

Every value is checked when it is read; a bad one raises :class:`ConfigError` with one
line naming the setting, the value and where it came from. Profiles and grade scales are
YAML files looked up by name in ``$CJ_PROFILES_DIR``, ``./profiles`` and the package's
shipped ``cj_runner/profiles`` (in that order), or given as a path.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

import cj_runner
from cj_runner.core.models import GradeScale
from cj_runner.errors import ConfigError

if TYPE_CHECKING:
    from cj_runner.core.continuation import ContinuationLimits

MatchingStrategy = Literal["balanced", "random", "swiss", "infogain", "grade_boundary"]
Source = Literal["default", "profile", "env", "flag"]

ENV_PREFIX = "CJ_"
PROFILES_DIR_ENV = "CJ_PROFILES_DIR"
SHIPPED_PROFILES = Path(cj_runner.__file__).resolve().parent / "profiles"
"""The profiles and grade scales that ship inside the package (package data)."""
DEFAULT_PROFILE = "default"
GRADE_SCALES_FILE = "grade_scales.yaml"
PROFILE_KEYS = ("name", "description", "settings", "judge")

_SEED_LIMIT = 2**63  # the seed is stored in a signed 64-bit database column


class Settings(BaseModel, frozen=True, extra="forbid"):
    """The effective settings of a batch; field names are the setting names (spec §3)."""

    MAX_PAIRWISE_COMPARISONS: int = Field(
        300, gt=0, description="Default total budget of a batch: judge calls it may send."
    )
    COMPARISONS_PER_STABILITY_CHECK_ITERATION: int = Field(
        12, ge=1, description="Most comparisons in one wave."
    )
    MIN_COMPARISONS_FOR_STABILITY_CHECK: int = Field(
        12, ge=0, description="No stability stop before this many successful results."
    )
    SCORE_STABILITY_THRESHOLD: float = Field(
        0.05,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Stable when the largest change of any node's BT score between two successive "
            "waves is below this; 0 switches the stability stop off."
        ),
    )
    MAX_ITERATIONS: int = Field(50, ge=1, description="Most waves in a batch.")
    MIN_RESAMPLING_NET_SIZE: int = Field(
        10,
        ge=0,
        description="A batch with at most this many student essays is a small net.",
    )
    MAX_RESAMPLING_PASSES_FOR_SMALL_NET: int = Field(
        2, ge=0, description="Resampling passes allowed for a small net."
    )
    MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH: int = Field(
        1, ge=0, description="Resampling passes allowed for other batches."
    )
    MIN_SUCCESS_RATE: float = Field(
        0.8,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Below this share of successful comparisons the batch finalizes as failed.",
    )
    MAX_CONCURRENT_REQUESTS: int = Field(
        8, ge=1, le=1024, description="Judge calls in flight at once."
    )
    MAX_ATTEMPTS_PER_COMPARISON: int = Field(
        3,
        ge=1,
        le=20,
        description=(
            "Attempts of one comparison (first call plus retries of transient errors); "
            "every attempt counts against the budget."
        ),
    )
    RETRY_BASE_DELAY_S: float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="Base delay in seconds of the exponential backoff between attempts.",
    )
    RETRY_MAX_DELAY_S: float = Field(
        30.0,
        ge=0,
        allow_inf_nan=False,
        description="Longest delay in seconds between attempts (at least RETRY_BASE_DELAY_S).",
    )
    MATCHING_STRATEGY: MatchingStrategy = Field(
        "infogain",
        description=(
            "How pairs are chosen inside coverage and resampling mode: `balanced` (fewest "
            "comparisons, then close scores), `random`, `swiss` (nearest score among the "
            "least compared), `infogain` (largest expected information gain), "
            "`grade_boundary` (where projected grades are least certain)."
        ),
    )
    AUDIT_SHARE: float = Field(
        0.0,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description=(
            "Share of calls spent on uniformly random audit pairs for the design-robust "
            "reliability estimate."
        ),
    )
    PANEL_DOUBLE_SHARE: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description=(
            "Panels: share of each wave's pairs also asked of a second judge (both answers "
            "count), so every two judges share pairs for Cohen's kappa; none = the panel "
            "profile's `double_share`, else 0.1. No effect with one judge."
        ),
    )
    TARGET_RELIABILITY: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Stop once the robust reliability reaches this; none = off.",
    )
    TARGET_MAX_SE: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Stop once every student's score SE is at most this; none = off.",
    )
    MAX_COST_USD: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Money budget in US dollars next to the call budget; none = off.",
    )
    BT_PRIOR_PRECISION: float = Field(
        0.01,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Ridge (Gaussian prior) precision of the Bradley-Terry fit; keeps scores finite "
            "for unbeaten or disconnected nodes (0 is refused: the fit would diverge)."
        ),
    )
    FIT_ORDER_EFFECT: bool = Field(
        True, description="Estimate the position-A logit shift in the final fit."
    )
    USE_ANCHORS: bool = Field(
        True, description="Include the assignment's anchors in the batch and project grades."
    )
    SEED: int | None = Field(
        None,
        ge=0,
        lt=_SEED_LIMIT,
        description="Batch seed; none = a random seed is drawn and stored with the batch.",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> Settings:
        if self.RETRY_MAX_DELAY_S < self.RETRY_BASE_DELAY_S:
            raise ValueError(
                f"RETRY_MAX_DELAY_S={self.RETRY_MAX_DELAY_S:g} must be >= "
                f"RETRY_BASE_DELAY_S={self.RETRY_BASE_DELAY_S:g}"
            )
        return self


def setting_names() -> list[str]:
    """All setting names, in declaration order."""
    return list(Settings.model_fields)


@dataclass(frozen=True)
class ResolvedProfile:
    """The effective settings of a run and where each one came from.

    ``sources`` maps every setting name to ``default``, ``profile``, ``env`` or ``flag``
    (``--set`` and the first-class flags are both ``flag``). ``judge`` is the profile's
    ``judge:`` entry, unvalidated: a judge profile name or an inline mapping.
    """

    name: str
    path: Path | None
    settings: Settings
    judge: str | Mapping[str, Any] | None
    sources: dict[str, str]
    description: str = ""


# --------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping with the same key twice."""


def _construct_unique_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    # Checked before merge keys (``<<: *base``) are flattened, so that overriding a merged
    # key stays legal while writing the same key twice does not.
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: let the default constructor complain
            continue
        if first is not None:
            raise ConfigError(
                f"duplicate key '{key}' (lines {first} and {key_node.start_mark.line + 1})"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _load_yaml(path: Path, what: str) -> Any:
    """Parse one YAML file; every problem becomes a one-line ConfigError naming ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid UTF-8 at byte {exc.start}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None


# --------------------------------------------------------------------------- lookup


def profile_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Folders searched for ``<name>.yaml``: ``$CJ_PROFILES_DIR`` (may list several,
    separated by the OS path separator), ``./profiles``, then the profiles shipped inside
    the package (``cj_runner/profiles``, installed with every wheel)."""
    env = os.environ if env is None else env
    dirs: list[Path] = []
    for part in (env.get(PROFILES_DIR_ENV) or "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    dirs.append(Path.cwd() / "profiles")
    dirs.append(SHIPPED_PROFILES)
    unique: list[Path] = []
    for folder in dirs:
        if not any(_same_dir(folder, seen) for seen in unique):
            unique.append(folder)
    return unique


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _top_level_keys(path: Path) -> set[str] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if data is None:
        return set()  # an empty profile: all defaults
    return {str(k) for k in data} if isinstance(data, dict) else None


def available_profiles(kind: str = "profile", env: Mapping[str, str] | None = None) -> list[str]:
    """Names found on the search path: CJ profiles for ``kind="profile"`` (files without a
    top-level ``kind:``, grade scales excluded), judge profiles (with ``kind:``) otherwise."""
    names: set[str] = set()
    for folder in profile_dirs(env):
        if not folder.is_dir():
            continue
        for path in [*folder.glob("*.yaml"), *folder.glob("*.yml")]:
            if path.name == GRADE_SCALES_FILE:
                continue
            keys = _top_level_keys(path)
            if keys is None:
                continue
            is_judge = "kind" in keys and "judge" not in keys
            if is_judge == (kind != "profile"):
                names.add(path.stem)
    return sorted(names)


def resolve_profile_path(
    name_or_path: str, kind: str = "profile", *, env: Mapping[str, str] | None = None
) -> Path:
    """The YAML file a profile name or path refers to.

    A path to an existing file is used as is. Otherwise ``<name>.yaml`` (or ``.yml``) is
    looked up in :func:`profile_dirs`. ``kind`` names the kind of profile in messages.

    Raises:
        ConfigError: nothing found; the message lists the available names.
    """
    text = name_or_path.strip()
    candidate = Path(text).expanduser()
    if text and candidate.is_file():
        return candidate
    looks_like_path = candidate.suffix in {".yaml", ".yml"} or "/" in text or "\\" in text
    if looks_like_path:
        raise ConfigError(f"{kind} file {text} not found")
    if text:
        for folder in profile_dirs(env):
            for suffix in (".yaml", ".yml"):
                path = folder / f"{text}{suffix}"
                if path.is_file():
                    return path
    available = ", ".join(available_profiles(kind, env)) or "none"
    raise ConfigError(f"unknown {kind} '{text}' (available: {available})")


def _grade_scales_path(env: Mapping[str, str] | None = None) -> Path:
    for folder in profile_dirs(env):
        path = folder / GRADE_SCALES_FILE
        if path.is_file():
            return path
    raise ConfigError(f"no {GRADE_SCALES_FILE} found in the profiles folders")


# --------------------------------------------------------------------------- values

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


@dataclass(frozen=True)
class _FieldKind:
    base: type
    optional: bool
    choices: tuple[str, ...] = ()


def _field_kind(name: str) -> _FieldKind:
    annotation = Settings.model_fields[name].annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return _FieldKind(str, optional, tuple(str(a) for a in get_args(annotation)))
    assert isinstance(annotation, type)
    return _FieldKind(annotation, optional)


class _BadValue(ValueError):
    """A value of the wrong type; the message says what was expected."""


def _whole_number(value: Any) -> int:
    """``value`` as an int that fits the database's signed 64-bit columns."""
    number: int | None = None
    if isinstance(value, bool):
        raise _BadValue("must be a whole number")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        number = int(float(value))
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value.replace("_", ""))
    if number is None:
        raise _BadValue("must be a whole number")
    if number >= _SEED_LIMIT:  # beyond the database's 64-bit integers
        raise _BadValue(f"must be < {_SEED_LIMIT}")
    if number < -_SEED_LIMIT:
        raise _BadValue(f"must be >= {-_SEED_LIMIT}")
    return number


def _coerce(name: str, value: Any) -> Any:
    """Turn a raw value (a string from env/--set, a YAML scalar, a flag) into the field's
    type without pydantic's lax conversions (no ``True`` as ``1``, no ``2.5`` as ``2``)."""
    kind = _field_kind(name)
    if isinstance(value, str):
        value = value.strip()
        if kind.optional and value.lower() in _NONE:
            return None
    if value is None:
        if kind.optional:
            return None
        raise _BadValue("must not be empty")
    if kind.base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _BadValue("must be true or false")
    if kind.base is int:
        return _whole_number(value)
    if kind.base is float:
        if isinstance(value, bool):
            raise _BadValue("must be a number")
        if isinstance(value, numbers.Real):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _BadValue("must be a number") from None
        else:
            raise _BadValue("must be a number")
        if not math.isfinite(number):
            raise _BadValue("must be a finite number")
        return number
    if kind.choices:
        if isinstance(value, str) and value.lower() in kind.choices:
            return value.lower()
        raise _BadValue("must be one of " + ", ".join(kind.choices))
    return value


def _range_text(name: str) -> str:
    """The allowed values of a setting in words, e.g. ``> 0``, ``0 .. 1``, ``true/false``."""
    kind = _field_kind(name)
    if kind.base is bool:
        return "true/false"
    if kind.choices:
        return ", ".join(kind.choices)
    if name == "SEED":
        return "0 .. 2^63-1, or none"
    low = high = ""
    for item in Settings.model_fields[name].metadata:
        if isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Ge):
            low = f">= {item.ge}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, annotated_types.Le):
            high = f"<= {item.le}"
    text = " and ".join(p for p in (low, high) if p) or "any"
    if low.startswith(">=") and high.startswith("<="):
        text = f"{low[3:]} .. {high[3:]}"
    return f"{text}, or none" if kind.optional else text


_PYDANTIC_BOUND = {
    "greater_than": ("gt", "> {}"),
    "greater_than_equal": ("ge", ">= {}"),
    "less_than": ("lt", "< {}"),
    "less_than_equal": ("le", "<= {}"),
}


def _explain(error: Mapping[str, Any]) -> str:
    bound = _PYDANTIC_BOUND.get(str(error["type"]))
    ctx = error.get("ctx") or {}
    if bound is not None and bound[0] in ctx:
        limit = ctx[bound[0]]
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return "must be " + bound[1].format(limit)
    return str(error["msg"]).removeprefix("Value error, ")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unknown_setting(name: str, where: str) -> ConfigError:
    names = setting_names()
    close = difflib.get_close_matches(name.upper(), names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(
        f"unknown setting '{name}' {where}{hint} (valid settings: {', '.join(names)})"
    )


# --------------------------------------------------------------------------- profiles


@dataclass
class _Layers:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # "(from ...)" text for messages
    shown: dict[str, str] = field(default_factory=dict)  # the value as the user wrote it

    def put(self, name: str, raw: Any, source: Source, origin: str) -> None:
        try:
            value = _coerce(name, raw)
        except _BadValue as exc:
            raise ConfigError(f"setting {name}={_show(raw)} ({origin}) {exc}") from None
        self.values[name] = value
        self.sources[name] = source
        self.origins[name] = origin
        self.shown[name] = _show(raw.strip() if isinstance(raw, str) else raw)


def _read_profile(path: Path) -> dict[str, Any]:
    data = _load_yaml(path, "profile")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"profile {path} must be a YAML mapping with keys {', '.join(PROFILE_KEYS)}"
        )
    keys = [str(k) for k in data]
    if "kind" in keys and "judge" not in keys:
        raise ConfigError(
            f"profile {path} is a judge profile (it has a top-level 'kind:'); "
            "pass it with --judge, or give a CJ profile to --profile"
        )
    unknown = [k for k in keys if k not in PROFILE_KEYS]
    if unknown:
        raise ConfigError(
            f"profile {path}: unknown top-level key '{unknown[0]}' "
            f"(allowed: {', '.join(PROFILE_KEYS)})"
        )
    return {str(k): v for k, v in data.items()}


def _profile_parts(
    path: Path, data: Mapping[str, Any]
) -> tuple[str, str, Mapping[str, Any], str | Mapping[str, Any] | None]:
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"profile {path}: 'name' must be a non-empty string")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"profile {path}: 'description' must be a string")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"profile {path}: 'settings' must be a mapping of NAME: value")
    judge = data.get("judge")
    if judge is not None and not (
        (isinstance(judge, str) and judge.strip()) or isinstance(judge, dict)
    ):
        raise ConfigError(
            f"profile {path}: 'judge' must be a judge profile name or a mapping of judge fields"
        )
    if isinstance(judge, str):
        judge = judge.strip()
    return name.strip(), description.strip(), settings, judge


def parse_override(text: str) -> tuple[str, str]:
    """Split one ``--set NAME=VALUE`` argument; the name must be a setting."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--set expects NAME=VALUE, got '{text}'")
    if name not in Settings.model_fields:
        raise _unknown_setting(name, "in --set")
    return name, value


def load_settings(
    profile: str | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    flag_values: Mapping[str, Any] | None = None,
) -> ResolvedProfile:
    """Build the effective settings of a run.

    Args:
        profile: a profile name or YAML path; ``None`` is the ``default`` profile.
        overrides: ``NAME=VALUE`` strings from repeated ``--set``.
        env: the environment (``os.environ`` when ``None``); only ``CJ_<NAME>`` variables
            whose NAME is a setting are read (an empty one counts as unset), other ``CJ_*``
            variables are ignored.
        flag_values: first-class command-line flags by setting name, already typed; a
            ``None`` value means the flag was not given and is skipped.

    Returns:
        The resolved profile with the settings and the source of each one.

    Raises:
        ConfigError: unknown profile, setting or top-level key, a value of the wrong type
            or out of range; one line naming the setting, value and source.
    """
    env = os.environ if env is None else env
    path: Path | None = None
    name, description, judge = DEFAULT_PROFILE, "", None
    profile_settings: Mapping[str, Any] = {}
    try:
        path = resolve_profile_path(profile or DEFAULT_PROFILE, "profile", env=env)
    except ConfigError:
        if profile is not None:
            raise
        # An installed copy without a profiles folder still runs on the built-in defaults.
    if path is not None:
        name, description, profile_settings, judge = _profile_parts(path, _read_profile(path))

    layers = _Layers()
    for key, raw in profile_settings.items():
        if str(key) not in Settings.model_fields:
            raise _unknown_setting(str(key), f"in profile {path}")
        layers.put(str(key), raw, "profile", f"from profile {path}")
    for key in Settings.model_fields:
        env_name = ENV_PREFIX + key
        if env.get(env_name, "").strip():  # an empty variable counts as unset
            layers.put(key, env[env_name], "env", f"from env {env_name}")
    for text in overrides:
        key, raw = parse_override(text)
        layers.put(key, raw, "flag", "from --set")
    for key, raw in (flag_values or {}).items():
        if key not in Settings.model_fields:
            raise _unknown_setting(key, "in command-line flags")
        if raw is not None:
            layers.put(key, raw, "flag", "from a command-line flag")

    try:
        settings = Settings.model_validate(layers.values)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, layers)) from None
    sources = {key: layers.sources.get(key, "default") for key in Settings.model_fields}
    return ResolvedProfile(name, path, settings, judge, sources, description)


def _validation_message(exc: ValidationError, layers: _Layers) -> str:
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    key = str(loc[0]) if loc else ""
    if key in layers.values:
        return f"setting {key}={layers.shown[key]} ({layers.origins[key]}) {_explain(error)}"
    # A rule across settings (e.g. the retry delays): name every source involved.
    involved = [f"{k} {layers.origins[k]}" for k in layers.values if k in str(error["msg"])]
    suffix = f" ({'; '.join(involved)})" if involved else ""
    return f"settings: {_explain(error)}{suffix}"


def settings_from_stored(values: Mapping[str, Any]) -> Settings:
    """Rebuild settings stored with a batch (``Settings.model_dump()``); names that are no
    longer settings are dropped, new settings take their defaults."""
    known = {k: v for k, v in values.items() if k in Settings.model_fields}
    try:
        return Settings.model_validate(known)
    except ValidationError as exc:
        raise ConfigError(f"stored settings are invalid: {_explain(exc.errors()[0])}") from None


# --------------------------------------------------------------------------- reference


def settings_reference() -> list[tuple[str, str, str, str]]:
    """``(name, default, allowed values, meaning)`` for every setting, in order."""
    rows = []
    for name, info in Settings.model_fields.items():
        rows.append((name, _show(info.default), _range_text(name), info.description or ""))
    return rows


def settings_markdown_table() -> str:
    """The settings reference as a markdown table (in docs/settings.md)."""
    lines = ["| setting | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, default, allowed, meaning in settings_reference():
        lines.append(f"| `{name}` | {default} | {allowed} | {meaning} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- grade scales

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


# --------------------------------------------------------------------------- continuation


def continuation_limits(settings: Settings) -> ContinuationLimits:
    """The continuation decision's limits (spec §5) taken from ``settings``."""
    from cj_runner.core.continuation import ContinuationLimits

    return ContinuationLimits(
        min_success_rate=settings.MIN_SUCCESS_RATE,
        min_comparisons_for_stability_check=settings.MIN_COMPARISONS_FOR_STABILITY_CHECK,
        score_stability_threshold=settings.SCORE_STABILITY_THRESHOLD,
        max_iterations=settings.MAX_ITERATIONS,
        max_passes_small_net=settings.MAX_RESAMPLING_PASSES_FOR_SMALL_NET,
        max_passes_regular=settings.MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH,
        target_reliability=settings.TARGET_RELIABILITY,
        target_max_se=settings.TARGET_MAX_SE,
        max_cost_usd=settings.MAX_COST_USD,
    )

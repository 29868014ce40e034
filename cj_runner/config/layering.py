"""Building a run's effective settings in layers, and rebuilding a batch's stored ones.

Later layers win::

    defaults  <  profile YAML ``settings:``  <  env ``CJ_<NAME>``  <  ``--set NAME=VALUE``
              <  first-class command-line flags (already typed)

Every value is checked when it is read (``values._coerce``); a bad one raises
:class:`ConfigError` with one line naming the setting, the value and where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cj_runner.config.lookup import DEFAULT_PROFILE, _load_yaml, resolve_profile_path
from cj_runner.config.settings import Settings, Source
from cj_runner.config.values import _BadValue, _coerce, _explain, _show, _unknown_setting
from cj_runner.errors import ConfigError

ENV_PREFIX = "CJ_"
PROFILE_KEYS = ("name", "description", "settings", "judge")


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


STORED_BEFORE_DEFAULTS: dict[str, Any] = {"MISFIT_CHECK_SHARE": 0.0}
"""Values for settings a stored batch may lack, where the default would change its design.

A batch stored before a setting existed ran without what it controls; when that setting's
default turns the feature on (check pairs are on by default), a resumed batch takes the
value that keeps the design it was run with, so it finishes as it would have without the
interruption."""


def settings_from_stored(values: Mapping[str, Any]) -> Settings:
    """Rebuild settings stored with a batch (``Settings.model_dump()``); names that are no
    longer settings are dropped, new settings take their defaults, or the value in
    :data:`STORED_BEFORE_DEFAULTS` where the default would change the batch's design."""
    known = {k: v for k, v in values.items() if k in Settings.model_fields}
    for name, value in STORED_BEFORE_DEFAULTS.items():
        known.setdefault(name, value)
    try:
        return Settings.model_validate(known)
    except ValidationError as exc:
        raise ConfigError(f"stored settings are invalid: {_explain(exc.errors()[0])}") from None

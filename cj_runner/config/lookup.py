"""Profile files: the search path, finding a profile by name, and reading YAML strictly.

Profiles and grade scales are YAML files looked up by name in ``$CJ_PROFILES_DIR``,
``./profiles`` and the package's shipped ``cj_runner/profiles`` (in that order), or given
as a path. Every problem reading one is a one-line :class:`ConfigError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import cj_runner
from cj_runner.errors import ConfigError

PROFILES_DIR_ENV = "CJ_PROFILES_DIR"
SHIPPED_PROFILES = Path(cj_runner.__file__).resolve().parent / "profiles"
"""The profiles and grade scales that ship inside the package (package data)."""
DEFAULT_PROFILE = "default"
GRADE_SCALES_FILE = "grade_scales.yaml"


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

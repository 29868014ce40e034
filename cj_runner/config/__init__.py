"""Settings, CJ profiles and grade scales (spec §3).

Effective settings are built in layers, later layers winning::

    defaults  <  profile YAML ``settings:``  <  env ``CJ_<NAME>``  <  ``--set NAME=VALUE``
              <  first-class command-line flags (already typed)

Every value is checked when it is read; a bad one raises :class:`ConfigError` with one
line naming the setting, the value and where it came from. Profiles and grade scales are
YAML files looked up by name in ``$CJ_PROFILES_DIR``, ``./profiles`` and the package's
shipped ``cj_runner/profiles`` (in that order), or given as a path.

The package, by responsibility:

* ``settings``: the :class:`Settings` model (field order is the documented order) and
  :func:`continuation_limits`;
* ``values``: one value coerced strictly, the messages about it, the settings reference;
* ``lookup``: the profiles search path, a profile found by name, YAML read strictly;
* ``layering``: :func:`load_settings` (the layers above), :class:`ResolvedProfile`,
  :func:`settings_from_stored`;
* ``grade_scales``: :func:`load_grade_scale` and the scale names.
"""

from cj_runner.config.grade_scales import grade_scale_names, load_grade_scale
from cj_runner.config.layering import (
    ENV_PREFIX,
    PROFILE_KEYS,
    ResolvedProfile,
    load_settings,
    parse_override,
    settings_from_stored,
)
from cj_runner.config.lookup import (
    DEFAULT_PROFILE,
    GRADE_SCALES_FILE,
    PROFILES_DIR_ENV,
    SHIPPED_PROFILES,
    available_profiles,
    profile_dirs,
    resolve_profile_path,
)
from cj_runner.config.settings import (
    MatchingStrategy,
    Settings,
    Source,
    continuation_limits,
    setting_names,
)
from cj_runner.config.values import settings_markdown_table, settings_reference

__all__ = [
    "DEFAULT_PROFILE",
    "ENV_PREFIX",
    "GRADE_SCALES_FILE",
    "PROFILES_DIR_ENV",
    "PROFILE_KEYS",
    "SHIPPED_PROFILES",
    "MatchingStrategy",
    "ResolvedProfile",
    "Settings",
    "Source",
    "available_profiles",
    "continuation_limits",
    "grade_scale_names",
    "load_grade_scale",
    "load_settings",
    "parse_override",
    "profile_dirs",
    "resolve_profile_path",
    "setting_names",
    "settings_from_stored",
    "settings_markdown_table",
    "settings_reference",
]

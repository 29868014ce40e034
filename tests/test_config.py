"""Settings, profiles and grade scales (spec §3; issue 2 item 5, issue 7 item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cj_runner import config
from cj_runner.config import (
    ResolvedProfile,
    Settings,
    continuation_limits,
    grade_scale_names,
    load_grade_scale,
    load_settings,
    resolve_profile_path,
    setting_names,
    settings_from_stored,
    settings_markdown_table,
)
from cj_runner.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty profiles folder; the working folder is moved away from the repository."""
    folder = tmp_path / "myprofiles"
    folder.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


def env_for(folder: Path, **extra: str) -> dict[str, str]:
    return {"CJ_PROFILES_DIR": str(folder), **extra}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert isinstance(excinfo.value, UserError) and excinfo.value.exit_code == 2
    return message


# --------------------------------------------------------------------------- defaults


def test_default_profile_gives_the_spec_defaults(pdir: Path) -> None:
    resolved = load_settings(env=env_for(pdir))
    assert isinstance(resolved, ResolvedProfile)
    assert resolved.name == "default"
    assert resolved.path is not None and resolved.path.name == "default.yaml"
    assert resolved.settings == Settings()
    assert set(resolved.sources.values()) == {"default"}
    assert list(resolved.sources) == setting_names()
    s = resolved.settings
    spec = {
        "MAX_PAIRWISE_COMPARISONS": 300,
        "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 12,
        "MIN_COMPARISONS_FOR_STABILITY_CHECK": 12,
        "SCORE_STABILITY_THRESHOLD": 0.05,
        "MAX_ITERATIONS": 50,
        "MIN_RESAMPLING_NET_SIZE": 10,
        "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 2,
        "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 1,
        "MIN_SUCCESS_RATE": 0.8,
        "MAX_CONCURRENT_REQUESTS": 8,
    }
    assert {k: getattr(s, k) for k in spec} == spec
    assert s.MATCHING_STRATEGY == "infogain" and s.SEED is None and s.FIT_ORDER_EFFECT


def test_without_any_default_profile_the_builtin_defaults_apply(
    pdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.lookup, "profile_dirs", lambda env=None: [pdir])
    resolved = load_settings(env={})
    assert resolved.path is None and resolved.name == "default"
    assert resolved.settings == Settings()
    with pytest.raises(ConfigError, match="unknown profile 'default'"):
        load_settings("default", env={})


def test_settings_are_frozen_and_refuse_unknown_fields() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.MAX_ITERATIONS = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(NOT_A_SETTING=1)  # type: ignore[call-arg]


def test_stored_settings_round_trip_and_ignore_retired_names() -> None:
    settings = Settings(MAX_PAIRWISE_COMPARISONS=60, SEED=7, TARGET_MAX_SE=0.3)
    stored = {**settings.model_dump(mode="json"), "RETIRED_SETTING": 1}
    assert settings_from_stored(stored) == settings


def test_a_batch_stored_before_check_pairs_resumes_without_them() -> None:
    # stored before MISFIT_CHECK_SHARE existed: the default (check pairs on) would change
    # the design mid-batch, so the value that keeps it is taken; a stored value is kept
    assert Settings().MISFIT_CHECK_SHARE > 0
    old = Settings(MAX_PAIRWISE_COMPARISONS=60).model_dump(mode="json")
    del old["MISFIT_CHECK_SHARE"]
    assert settings_from_stored(old).MISFIT_CHECK_SHARE == 0.0
    assert settings_from_stored(old).MAX_PAIRWISE_COMPARISONS == 60
    for share in (0.0, 0.1, Settings().MISFIT_CHECK_SHARE):
        stored = Settings(MISFIT_CHECK_SHARE=share).model_dump(mode="json")
        assert share == settings_from_stored(stored).MISFIT_CHECK_SHARE


# --------------------------------------------------------------------------- precedence

LAYERS = ["profile", "env", "set", "flag"]


@pytest.mark.parametrize("top", range(len(LAYERS)))
def test_precedence_profile_env_set_flag(pdir: Path, top: int) -> None:
    """Each layer overrides the ones before it: profile < env < --set < flag."""
    values = {"profile": 100, "env": 200, "set": 250, "flag": 260}
    used = LAYERS[: top + 1]
    write(pdir / "p.yaml", f"settings:\n  MAX_PAIRWISE_COMPARISONS: {values['profile']}\n")
    env = env_for(pdir)
    if "env" in used:
        env["CJ_MAX_PAIRWISE_COMPARISONS"] = str(values["env"])
    overrides = [f"MAX_PAIRWISE_COMPARISONS={values['set']}"] if "set" in used else []
    flags = {"MAX_PAIRWISE_COMPARISONS": values["flag"]} if "flag" in used else {}
    resolved = load_settings("p", overrides, env, flags)
    assert values[LAYERS[top]] == resolved.settings.MAX_PAIRWISE_COMPARISONS
    expected_source = {"profile": "profile", "env": "env", "set": "flag", "flag": "flag"}
    assert resolved.sources["MAX_PAIRWISE_COMPARISONS"] == expected_source[LAYERS[top]]
    assert resolved.sources["MAX_ITERATIONS"] == "default"


def test_layers_merge_different_settings(pdir: Path) -> None:
    write(pdir / "p.yaml", "settings:\n  MAX_ITERATIONS: 7\n  SEED: 3\n")
    env = env_for(pdir, CJ_MIN_SUCCESS_RATE="0.5")
    resolved = load_settings("p", ["SEED=none", "AUDIT_SHARE=0.1"], env, {"USE_ANCHORS": False})
    s = resolved.settings
    assert (s.MAX_ITERATIONS, s.SEED, s.MIN_SUCCESS_RATE, s.AUDIT_SHARE, s.USE_ANCHORS) == (
        7,
        None,
        0.5,
        0.1,
        False,
    )
    assert resolved.sources["MAX_ITERATIONS"] == "profile"
    assert resolved.sources["MIN_SUCCESS_RATE"] == "env"
    assert resolved.sources["SEED"] == "flag"


def test_later_set_wins_over_earlier_set(pdir: Path) -> None:
    resolved = load_settings(None, ["MAX_ITERATIONS=4", "MAX_ITERATIONS=9"], env_for(pdir))
    assert resolved.settings.MAX_ITERATIONS == 9


def test_flag_value_none_means_flag_not_given(pdir: Path) -> None:
    env = env_for(pdir, CJ_SEED="11")
    resolved = load_settings(None, (), env, {"SEED": None, "MAX_PAIRWISE_COMPARISONS": None})
    assert resolved.settings.SEED == 11
    assert resolved.sources["SEED"] == "env"
    assert resolved.sources["MAX_PAIRWISE_COMPARISONS"] == "default"


def test_other_cj_variables_are_not_settings(pdir: Path) -> None:
    env = env_for(
        pdir, CJ_DB="sqlite:///x.db", CJ_TEST_POSTGRES_URL="x", CJ_max_iterations="3", CJ_="1"
    )
    resolved = load_settings(None, (), env)
    assert resolved.settings == Settings()


def test_environment_defaults_to_os_environ(pdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CJ_PROFILES_DIR", str(pdir))
    monkeypatch.setenv("CJ_MAX_ITERATIONS", "5")
    assert load_settings().settings.MAX_ITERATIONS == 5


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("MAX_PAIRWISE_COMPARISONS", " 60 ", 60),
        ("MAX_PAIRWISE_COMPARISONS", "1_000", 1000),
        ("SCORE_STABILITY_THRESHOLD", "0", 0.0),
        ("SCORE_STABILITY_THRESHOLD", "1e-3", 0.001),
        ("FIT_ORDER_EFFECT", "false", False),
        ("FIT_ORDER_EFFECT", "No", False),
        ("FIT_ORDER_EFFECT", "0", False),
        ("USE_ANCHORS", "yes", True),
        ("USE_ANCHORS", "TRUE", True),
        ("USE_ANCHORS", "1", True),
        ("USE_ANCHORS", "on", True),
        ("TARGET_RELIABILITY", "none", None),
        ("TARGET_RELIABILITY", "NULL", None),
        ("TARGET_RELIABILITY", "0.8", 0.8),
        ("MAX_COST_USD", "2.5", 2.5),
        ("MATCHING_STRATEGY", "InfoGain", "infogain"),
        ("SEED", "123456789012", 123456789012),
    ],
)
def test_text_values_are_parsed(pdir: Path, name: str, text: str, value: object) -> None:
    via_env = load_settings(None, (), env_for(pdir, **{f"CJ_{name}": text}))
    via_set = load_settings(None, [f"{name}={text}"], env_for(pdir))
    assert getattr(via_env.settings, name) == value
    assert getattr(via_set.settings, name) == value
    assert type(getattr(via_set.settings, name)) is type(value)


def test_profile_yaml_values_keep_their_types(pdir: Path) -> None:
    write(
        pdir / "p.yaml",
        "settings:\n  MAX_PAIRWISE_COMPARISONS: 60.0\n  SCORE_STABILITY_THRESHOLD: 0\n"
        "  FIT_ORDER_EFFECT: no\n  TARGET_MAX_SE: null\n  MATCHING_STRATEGY: swiss\n",
    )
    s = load_settings("p", env=env_for(pdir)).settings
    assert s.MAX_PAIRWISE_COMPARISONS == 60 and isinstance(s.MAX_PAIRWISE_COMPARISONS, int)
    assert s.SCORE_STABILITY_THRESHOLD == 0.0 and not s.FIT_ORDER_EFFECT
    assert s.TARGET_MAX_SE is None and s.MATCHING_STRATEGY == "swiss"


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("MAX_PAIRWISE_COMPARISONS=abc", "must be a whole number"),
        ("MAX_PAIRWISE_COMPARISONS=2.5", "must be a whole number"),
        ("MAX_PAIRWISE_COMPARISONS=none", "must be a whole number"),
        ("MAX_PAIRWISE_COMPARISONS=", "must be a whole number"),
        ("SCORE_STABILITY_THRESHOLD=fast", "must be a number"),
        ("SCORE_STABILITY_THRESHOLD=nan", "must be a finite number"),
        ("MIN_SUCCESS_RATE=inf", "must be a finite number"),
        ("FIT_ORDER_EFFECT=maybe", "must be true or false"),
        ("MATCHING_STRATEGY=best", "must be one of balanced, random, swiss"),
    ],
)
def test_values_of_the_wrong_type_are_refused(pdir: Path, assignment: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, [assignment], env_for(pdir))
    message = error_of(excinfo)
    name, _, value = assignment.partition("=")
    assert message.startswith(f"setting {name}={value} (from --set) ")
    assert fragment in message


def test_yaml_booleans_are_not_numbers(pdir: Path) -> None:
    write(pdir / "p.yaml", "settings:\n  MAX_ITERATIONS: true\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings("p", env=env_for(pdir))
    message = error_of(excinfo)
    assert "MAX_ITERATIONS=true" in message and "must be a whole number" in message


# --------------------------------------------------------------------------- ranges


def test_budget_zero_from_set_names_setting_and_source(pdir: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, ["MAX_PAIRWISE_COMPARISONS=0"], env_for(pdir))
    assert error_of(excinfo) == "setting MAX_PAIRWISE_COMPARISONS=0 (from --set) must be > 0"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("MAX_PAIRWISE_COMPARISONS", "-5", "must be > 0"),
        ("COMPARISONS_PER_STABILITY_CHECK_ITERATION", "0", "must be >= 1"),
        ("MIN_COMPARISONS_FOR_STABILITY_CHECK", "-1", "must be >= 0"),
        ("SCORE_STABILITY_THRESHOLD", "-0.1", "must be >= 0"),
        ("MAX_ITERATIONS", "0", "must be >= 1"),
        ("MIN_RESAMPLING_NET_SIZE", "-1", "must be >= 0"),
        ("MAX_RESAMPLING_PASSES_FOR_SMALL_NET", "-1", "must be >= 0"),
        ("MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH", "-2", "must be >= 0"),
        ("MIN_SUCCESS_RATE", "1.5", "must be <= 1"),
        ("MIN_SUCCESS_RATE", "-0.5", "must be >= 0"),
        ("MAX_CONCURRENT_REQUESTS", "0", "must be >= 1"),
        ("MAX_CONCURRENT_REQUESTS", "2000", "must be <= 1024"),
        ("MAX_ATTEMPTS_PER_COMPARISON", "0", "must be >= 1"),
        ("MAX_ATTEMPTS_PER_COMPARISON", "21", "must be <= 20"),
        ("RETRY_BASE_DELAY_S", "-1", "must be >= 0"),
        ("AUDIT_SHARE", "0.6", "must be <= 0.5"),
        ("TARGET_RELIABILITY", "1.2", "must be <= 1"),
        ("TARGET_MAX_SE", "0", "must be > 0"),
        ("MAX_COST_USD", "-1", "must be > 0"),
        ("BT_PRIOR_PRECISION", "-0.01", "must be > 0"),
        ("BT_PRIOR_PRECISION", "0", "must be > 0"),
        ("SEED", "-1", "must be >= 0"),
        ("SEED", str(2**63), "must be < 9223372036854775808"),
    ],
)
def test_out_of_range_from_env_names_the_variable(
    pdir: Path, name: str, value: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, (), env_for(pdir, **{f"CJ_{name}": value}))
    message = error_of(excinfo)
    assert message.startswith(f"setting {name}=")
    assert f"(from env CJ_{name})" in message
    assert message.endswith(fragment)


def test_out_of_range_in_profile_names_the_file(pdir: Path) -> None:
    path = write(pdir / "bad.yaml", "settings:\n  MIN_SUCCESS_RATE: 2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings("bad", env=env_for(pdir))
    assert error_of(excinfo) == f"setting MIN_SUCCESS_RATE=2 (from profile {path}) must be <= 1"


def test_out_of_range_from_a_flag(pdir: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, (), env_for(pdir), {"MAX_PAIRWISE_COMPARISONS": 0})
    assert "(from a command-line flag) must be > 0" in error_of(excinfo)


def test_a_later_layer_can_repair_an_earlier_bad_value(pdir: Path) -> None:
    env = env_for(pdir, CJ_MAX_PAIRWISE_COMPARISONS="0")
    resolved = load_settings(None, (), env, {"MAX_PAIRWISE_COMPARISONS": 40})
    assert resolved.settings.MAX_PAIRWISE_COMPARISONS == 40


def test_retry_delays_must_be_ordered(pdir: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, ["RETRY_MAX_DELAY_S=0.1"], env_for(pdir))
    message = error_of(excinfo)
    assert "RETRY_MAX_DELAY_S=0.1 must be >= RETRY_BASE_DELAY_S=0.5" in message
    assert "from --set" in message


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_budget_accepted_exactly_when_positive(value: int) -> None:
    env = {"CJ_PROFILES_DIR": str(REPO / "cj_runner" / "profiles")}
    try:
        resolved = load_settings(None, [f"MAX_PAIRWISE_COMPARISONS={value}"], env)
    except ConfigError as exc:
        assert value <= 0 and str(exc).endswith("must be > 0")
    else:
        assert value > 0 and value == resolved.settings.MAX_PAIRWISE_COMPARISONS


# --------------------------------------------------------------------------- unknown names


def test_unknown_setting_in_set_lists_valid_names(pdir: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, ["max_pairwise_comparisons=5"], env_for(pdir))
    message = error_of(excinfo)
    assert "unknown setting 'max_pairwise_comparisons' in --set" in message
    assert "did you mean MAX_PAIRWISE_COMPARISONS?" in message
    assert all(name in message for name in setting_names())


def test_unknown_setting_in_profile_names_the_file(pdir: Path) -> None:
    path = write(pdir / "p.yaml", "settings:\n  MAX_COMPARISONS: 5\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings("p", env=env_for(pdir))
    message = error_of(excinfo)
    assert f"unknown setting 'MAX_COMPARISONS' in profile {path}" in message
    assert "valid settings: MAX_PAIRWISE_COMPARISONS" in message


def test_unknown_setting_in_flags(pdir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'BUDGET' in command-line flags"):
        load_settings(None, (), env_for(pdir), {"BUDGET": 3})


@pytest.mark.parametrize("text", ["MAX_ITERATIONS", "=5", " =5"])
def test_set_without_name_value_is_refused(pdir: Path, text: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, [text], env_for(pdir))
    assert error_of(excinfo) == f"--set expects NAME=VALUE, got '{text}'"


def test_set_value_may_contain_equals_signs(pdir: Path) -> None:
    with pytest.raises(ConfigError, match="MATCHING_STRATEGY=a=b"):
        load_settings(None, ["MATCHING_STRATEGY=a=b"], env_for(pdir))


# --------------------------------------------------------------------------- profiles


def test_unknown_profile_lists_available_names(pdir: Path) -> None:
    write(pdir / "fast.yaml", "settings: {MAX_PAIRWISE_COMPARISONS: 50}\n")
    write(pdir / "mockjudge.yaml", "kind: mock\nseed: 1\n")  # a judge profile, not listed
    with pytest.raises(ConfigError) as excinfo:
        load_settings("nope", env=env_for(pdir))
    message = error_of(excinfo)
    assert message.startswith("unknown profile 'nope' (available: ")
    assert "fast" in message and "default" in message
    assert "mockjudge" not in message and "grade_scales" not in message


def test_profile_found_by_name_in_cwd_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles" / "local.yml", "settings:\n  MAX_ITERATIONS: 3\n")
    resolved = load_settings("local", env={})
    assert resolved.settings.MAX_ITERATIONS == 3 and resolved.name == "local"


def test_env_profiles_dir_comes_first(pdir: Path) -> None:
    write(pdir / "default.yaml", "name: mine\nsettings:\n  MAX_ITERATIONS: 9\n")
    resolved = load_settings(env=env_for(pdir))
    assert resolved.name == "mine" and resolved.settings.MAX_ITERATIONS == 9
    assert resolve_profile_path("default", env=env_for(pdir)) == pdir / "default.yaml"


def test_profile_by_path(pdir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.yaml", "description: d\nsettings:\n  SEED: 5\n")
    resolved = load_settings(str(path), env=env_for(pdir))
    assert (resolved.name, resolved.description, resolved.path) == ("elsewhere", "d", path)
    assert resolved.settings.SEED == 5 and resolved.sources["SEED"] == "profile"


def test_missing_profile_path_is_refused(pdir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(str(tmp_path / "missing.yaml"), env=env_for(pdir))
    assert error_of(excinfo) == f"profile file {tmp_path / 'missing.yaml'} not found"


def test_profile_with_unknown_top_level_key(pdir: Path) -> None:
    path = write(pdir / "p.yaml", "name: p\nsetings:\n  SEED: 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings("p", env=env_for(pdir))
    assert error_of(excinfo) == (
        f"profile {path}: unknown top-level key 'setings' "
        "(allowed: name, description, settings, judge)"
    )


def test_judge_profile_given_as_cj_profile(pdir: Path) -> None:
    write(pdir / "mockjudge.yaml", "kind: mock\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"is a judge profile .* pass it with --judge"):
        load_settings("mockjudge", env=env_for(pdir))
    assert resolve_profile_path("mockjudge", "judge", env=env_for(pdir)).name == "mockjudge.yaml"
    with pytest.raises(ConfigError) as excinfo:
        resolve_profile_path("x", "judge", env=env_for(pdir))
    message = error_of(excinfo)
    assert message.startswith("unknown judge 'x' (available: ") and "mockjudge" in message
    assert "default" not in message.split("available: ")[1].split(", ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n- b\n", "must be a YAML mapping"),
        ("settings: [1, 2]\n", "'settings' must be a mapping"),
        ("name: ''\n", "'name' must be a non-empty string"),
        ("description: [x]\n", "'description' must be a string"),
        ("judge: 3\n", "'judge' must be a judge profile name or a mapping"),
        ("settings:\n  SEED: 1\n   bad: [\n", "is not valid YAML at line"),
        ("settings:\n  SEED: 1\n  SEED: 2\n", "duplicate key 'SEED' (lines 2 and 3)"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
    ],
)
def test_malformed_profiles(pdir: Path, text: str, fragment: str) -> None:
    path = write(pdir / "p.yaml", text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings("p", env=env_for(pdir))
    message = error_of(excinfo)
    assert str(path) in message and fragment in message


def test_profile_not_utf8(pdir: Path) -> None:
    path = pdir / "p.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings("p", env=env_for(pdir))
    assert error_of(excinfo) == f"profile {path} is not valid UTF-8 at byte 9"


def test_empty_profile_is_all_defaults(pdir: Path) -> None:
    write(pdir / "empty.yaml", "# nothing\n")
    resolved = load_settings("empty", env=env_for(pdir))
    assert resolved.settings == Settings() and resolved.judge is None


@pytest.mark.parametrize(
    ("text", "judge"),
    [
        ("judge: ' mock '\n", "mock"),
        ("judge:\n  kind: mock\n  seed: 3\n", {"kind": "mock", "seed": 3}),
    ],
)
def test_profile_judge_is_passed_through(pdir: Path, text: str, judge: object) -> None:
    write(pdir / "p.yaml", text)
    assert load_settings("p", env=env_for(pdir)).judge == judge


def test_yaml_merge_keys_may_be_overridden(pdir: Path) -> None:
    write(pdir / "p.yaml", "settings:\n  <<: {SEED: 1, MAX_ITERATIONS: 4}\n  SEED: 2\n")
    s = load_settings("p", env=env_for(pdir)).settings
    assert (s.SEED, s.MAX_ITERATIONS) == (2, 4)


def test_shipped_profiles_load() -> None:
    for path in sorted((REPO / "cj_runner" / "profiles").glob("*.yaml")):
        keys = config.lookup._top_level_keys(path)
        if path.name == "grade_scales.yaml" or keys is None or "kind" in keys:
            continue
        resolved = load_settings(str(path), env={})
        assert resolved.path == path


# --------------------------------------------------------------------------- grade scales


def test_shipped_grade_scales() -> None:
    path = REPO / "cj_runner" / "profiles" / "grade_scales.yaml"
    assert {"eng5", "numeric6"} <= set(grade_scale_names(path))
    eng5 = load_grade_scale("eng5", path)
    assert eng5.grades == ("F", "E", "D", "C", "B", "A")
    assert eng5.index("F") == 0 and eng5.index("A") == 5
    assert load_grade_scale("numeric6", path).grades == tuple("123456")


def test_grade_scale_found_on_the_search_path(pdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CJ_PROFILES_DIR", str(pdir))
    write(pdir / "grade_scales.yaml", "ab:\n  grades: [b, a]\n")
    assert grade_scale_names() == ["ab"]
    assert load_grade_scale("ab").grades == ("b", "a")


def test_unknown_grade_scale_lists_names(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", "eng5:\n  grades: [F, E]\nx:\n  grades: [1, 2]\n")
    with pytest.raises(ConfigError) as excinfo:
        load_grade_scale("eng6", path)
    assert error_of(excinfo) == f"unknown grade scale 'eng6' in {path} (available: eng5, x)"


def test_priors_are_validated_and_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path / "g.yaml", "s:\n  grades: [lo, mid, hi]\n  priors: [0.333, 0.333, 0.333]\n"
    )
    scale = load_grade_scale("s", path)
    assert scale.priors is not None
    assert sum(scale.priors) == pytest.approx(1.0, abs=1e-12)
    assert scale.priors == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_numeric_grades_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", "n:\n  - 1\n  - 2\n  - 3\n")
    assert load_grade_scale("n", path).grades == ("1", "2", "3")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("s:\n  grades: [F, E]\ns:\n  grades: [1, 2]\n", "duplicate key 's' (lines 1 and 3)"),
        ("s:\n  grades: [F, E, F]\n", "grade scale 's' in {path}: duplicate grade 'F'"),
        ("s:\n  grades: [F]\n", "at least two grades"),
        ("s:\n  grades: F E\n", "at least two grades"),
        ("s:\n  grades: [F, '']\n", "a grade is empty"),
        ("s:\n  grades: [yes, no]\n", "must be a string (quote it in YAML)"),
        ("s:\n  grades: [F, E]\n  priors: [1.0]\n", "1 priors for 2 grades"),
        (
            "s:\n  grades: [F, E]\n  priors: [1.5, -0.5]\n",
            "prior -0.5 must be a finite number >= 0",
        ),
        ("s:\n  grades: [F, E]\n  priors: [0.5, 0.6]\n", "priors sum to 1.1; they must sum to 1"),
        ("s:\n  grades: [F, E]\n  priors: [a, b]\n", "prior 'a' is not a number"),
        ("s:\n  grades: [F, E]\n  priors: 1\n", "'priors' must be a list of 2 numbers"),
        ("s:\n  grades: [F, E]\n  prior: [0.5, 0.5]\n", "unknown key 'prior'"),
        ("s: 3\n", "must be a mapping with 'grades'"),
        ("[1, 2]\n", "must map scale names to definitions"),
    ],
)
def test_bad_grade_scales_name_file_and_scale(tmp_path: Path, body: str, fragment: str) -> None:
    path = write(tmp_path / "grade_scales.yaml", body)
    with pytest.raises(ConfigError) as excinfo:
        load_grade_scale("s", path)
    message = error_of(excinfo)
    assert str(path) in message
    assert fragment.format(path=path) in message


# --------------------------------------------------------------------------- reference


def test_settings_reference_is_documented() -> None:
    docs = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert settings_markdown_table() in docs, "regenerate the settings table in docs/settings.md"
    for name in setting_names():
        assert f"| `{name}` |" in docs


def test_every_setting_has_a_description() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description, name


def test_continuation_limits_come_from_settings() -> None:
    settings = Settings(
        MIN_SUCCESS_RATE=0.7,
        MIN_COMPARISONS_FOR_STABILITY_CHECK=5,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=99,
        MAX_RESAMPLING_PASSES_FOR_SMALL_NET=3,
        MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH=0,
        TARGET_RELIABILITY=0.8,
        TARGET_MAX_SE=0.4,
        MAX_COST_USD=1.5,
    )
    limits = continuation_limits(settings)
    assert (
        limits.min_success_rate,
        limits.min_comparisons_for_stability_check,
        limits.score_stability_threshold,
        limits.max_iterations,
        limits.max_passes_small_net,
        limits.max_passes_regular,
        limits.target_reliability,
        limits.target_max_se,
        limits.max_cost_usd,
    ) == (0.7, 5, 0.0, 99, 3, 0, 0.8, 0.4, 1.5)


def test_flags_accept_numpy_numbers(pdir: Path) -> None:
    import numpy as np

    flags = {"SEED": np.int64(42), "MAX_COST_USD": np.float64(1.5)}
    s = load_settings(None, (), env_for(pdir), flags).settings
    assert s.SEED == 42 and type(s.SEED) is int and s.MAX_COST_USD == 1.5


def test_empty_profile_is_listed(pdir: Path) -> None:
    write(pdir / "blank.yaml", "")
    with pytest.raises(ConfigError, match="blank"):
        load_settings("nope", env=env_for(pdir))


def test_empty_environment_variable_counts_as_unset(pdir: Path) -> None:
    resolved = load_settings(None, (), env_for(pdir, CJ_SEED="", CJ_MAX_ITERATIONS="  "))
    assert resolved.settings == Settings() and resolved.sources["SEED"] == "default"

"""Judge profiles: loading, search order, validation messages, overrides, build_judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from cj_runner.errors import ConfigError
from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.config import (
    JudgeConfig,
    available_judge_profiles,
    judge_config_from_mapping,
    load_judge_profile,
)
from cj_runner.judges.mock import MockJudge
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.prompts import load_prompt_template
from cj_runner.judges.registry import apply_overrides, build_judge

SHIPPED = ["mock_default", "openai", "anthropic", "local_openai_compatible", "mock_server"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name: str) -> None:
    config = load_judge_profile(name)
    assert config.name
    if config.kind != "mock":
        assert config.effective_base_url is not None
        assert config.effective_base_url.startswith("http")


def test_real_profiles_name_variables_not_keys() -> None:
    assert load_judge_profile("openai").api_key_env == "OPENAI_API_KEY"
    assert load_judge_profile("anthropic").api_key_env == "ANTHROPIC_API_KEY"
    local = load_judge_profile("local_openai_compatible")
    assert local.api_key_env is None
    assert local.price_input_per_mtok == 0 and local.price_output_per_mtok == 0
    assert local.base_url == "http://127.0.0.1:8000/v1"
    assert load_judge_profile("openai").price_input_per_mtok > 0


def test_mock_default_equals_builtin_defaults() -> None:
    assert load_judge_profile("mock_default") == JudgeConfig()


def test_unknown_profile_lists_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_judge_profile("no_such_judge")
    message = str(info.value)
    assert "no_such_judge" in message and "\n" not in message
    for name in SHIPPED:
        assert name in message
    assert "default" not in message.split("available judge profiles:")[1].split(", ")


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: mock\nnoise: 1\ntemprature: 0.3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_judge_profile(str(path))
    assert str(path) in str(info.value)
    assert "temprature" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("kind: mock\nerrors: {timeout: 1.5}\n", "errors.timeout"),
        ("kind: mock\nerrors: {timeout: 0.6, server_error: 0.6}\n", "errors"),
        ("kind: mock\nnoise: -1\n", "noise"),
        ("kind: gpt\n", "kind"),
        ("kind: openai_compatible\nbase_url: ftp://x\n", "base_url"),
        ("kind: mock\nlatency: {distribution: gamma}\n", "latency.distribution"),
        ("kind: mock\nmax_tokens: 0\n", "max_tokens"),
        ("kind: anthropic\napi_key_env: " + "K" * 65 + "\n", "api_key_env"),
    ],
)
def test_out_of_range_fields_are_named(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_judge_profile(str(path))
    assert f"'{field}'" in str(info.value)


def test_pasted_key_in_api_key_env_is_refused_without_echo(tmp_path: Path) -> None:
    secret = "sk-proj-THISISAPLANTEDSECRET-1234567890"
    path = tmp_path / "p.yaml"
    path.write_text(f"kind: openai_compatible\napi_key_env: {secret}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_judge_profile(str(path))
    assert "api_key_env" in str(info.value)
    assert secret not in str(info.value)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("kind: mock\nnoise: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_judge_profile(str(path))


def test_cj_profile_given_as_judge_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "cj.yaml"
    path.write_text("name: x\nsettings: {}\njudge: mock_default\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="CJ profile"):
        load_judge_profile(str(path))


def test_search_order_env_dir_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir, cwd = tmp_path / "env", tmp_path / "cwd"
    (cwd / "profiles").mkdir(parents=True)
    env_dir.mkdir()
    (cwd / "profiles" / "mine.yaml").write_text("kind: mock\nseed: 2\n", encoding="utf-8")
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("CJ_PROFILES_DIR", raising=False)
    assert load_judge_profile("mine").seed == 2
    assert "mine" in available_judge_profiles()
    (env_dir / "mine.yaml").write_text("kind: mock\nseed: 1\n", encoding="utf-8")
    monkeypatch.setenv("CJ_PROFILES_DIR", str(env_dir))
    assert load_judge_profile("mine").seed == 1
    # The repository's profiles stay reachable from anywhere.
    assert load_judge_profile("openai").kind == "openai_compatible"


def test_mapping_from_cj_profile_section() -> None:
    config = judge_config_from_mapping(
        {"kind": "mock", "position_bias": 0.1, "errors": {"timeout": 0.2}}, "cj.yaml"
    )
    assert config.position_bias == 0.1 and config.errors.timeout == 0.2
    with pytest.raises(ConfigError, match=r"cj\.yaml.*'bogus'"):
        judge_config_from_mapping({"kind": "mock", "bogus": 1}, "cj.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        judge_config_from_mapping(["kind"], "cj.yaml")  # type: ignore[arg-type]


def test_relative_prompt_template_is_resolved_against_profile(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "system: Judge.\nuser: 'A: {essay_a} B: {essay_b}'\n", encoding="utf-8"
    )
    (tmp_path / "judge.yaml").write_text("kind: mock\nprompt_template: t.yaml\n", encoding="utf-8")
    config = load_judge_profile(str(tmp_path / "judge.yaml"))
    assert config.prompt_template == str((tmp_path / "t.yaml").resolve())
    judge = build_judge(config)
    assert judge.prompt_hash == load_prompt_template(tmp_path / "t.yaml").hash
    assert judge.prompt_hash != load_prompt_template().hash


def test_apply_overrides() -> None:
    base = load_judge_profile("openai")
    changed = apply_overrides(
        base, model="gpt-x", temperature=0.7, max_tokens=99, base_url="http://127.0.0.1:9/v1/"
    )
    assert (changed.model, changed.temperature, changed.max_tokens) == ("gpt-x", 0.7, 99)
    assert changed.base_url == "http://127.0.0.1:9/v1"
    assert changed.api_key_env == base.api_key_env
    assert apply_overrides(base) == base
    with pytest.raises(ConfigError, match="temperature"):
        apply_overrides(base, temperature=5.0)


def test_numeric_grades_and_header_values_become_text(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "kind: mock\nanchor_grade_latent: {1: -1.5, 6: 2}\nextra_headers: {X-Num: 42}\n",
        encoding="utf-8",
    )
    config = load_judge_profile(str(path))
    assert config.anchor_grade_latent == {"1": -1.5, "6": 2.0}
    assert config.extra_headers == {"X-Num": "42"}


def test_seed_override() -> None:
    assert apply_overrides(JudgeConfig(seed=1), seed=9).seed == 9


def test_cost() -> None:
    config = JudgeConfig(price_input_per_mtok=2.0, price_output_per_mtok=10.0)
    assert config.cost(1_000_000, 100_000) == pytest.approx(3.0)


async def test_build_judge_kinds() -> None:
    mock = build_judge(JudgeConfig())
    assert isinstance(mock, MockJudge)
    openai = build_judge(load_judge_profile("openai"), env={"OPENAI_API_KEY": "k"})
    assert isinstance(openai, OpenAICompatJudge)
    assert openai.url == "https://api.openai.com/v1/chat/completions"
    anthropic = build_judge(load_judge_profile("anthropic"), env={"ANTHROPIC_API_KEY": "k"})
    assert isinstance(anthropic, AnthropicJudge)
    assert anthropic.url == "https://api.anthropic.com/v1/messages"
    local = build_judge(load_judge_profile("local_openai_compatible"), env={})
    assert isinstance(local, OpenAICompatJudge)
    for judge in (mock, openai, anthropic, local):
        assert judge.prompt_hash == load_prompt_template().hash
        await judge.aclose()


def test_missing_key_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        build_judge(load_judge_profile("anthropic"), env={"OTHER": "x"})
    assert "ANTHROPIC_API_KEY" in str(info.value)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_judge(load_judge_profile("openai"), env={"OPENAI_API_KEY": "  "})

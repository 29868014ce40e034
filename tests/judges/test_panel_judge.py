"""The panel judge: profile checks, one member per request (deterministic), members'
own answers and cache keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.errors import ConfigError
from cj_runner.judges.base import EssayText, JudgeRequest
from cj_runner.judges.config import judge_config_from_mapping, load_judge_profile
from cj_runner.judges.panel import PanelJudge, member_of
from cj_runner.judges.registry import build_judge


def _essay(k: int) -> EssayText:
    return EssayText(essay_id=f"e{k}", text=f"essay {k} " * (k + 1), checksum=f"{k:064x}")


def _panel(**member_overrides: Any) -> dict[str, Any]:
    return {
        "kind": "mock",
        "name": "p",
        "panel": [
            {"judge": {"kind": "mock", "name": "one", "model": "m1", "noise": 0.0}},
            {"judge": {"kind": "mock", "name": "two", "model": "m2", **member_overrides}},
        ],
    }


async def test_each_request_goes_to_one_member_and_gets_its_answer() -> None:
    config = judge_config_from_mapping(_panel(always="A"), "test")
    judge = build_judge(config)
    assert isinstance(judge, PanelJudge)
    names = []
    for k in range(40):
        request = JudgeRequest(essay_a=_essay(k), essay_b=_essay(k + 1))
        verdict = await judge.judge(request)
        name = member_of(config, request.essay_a.checksum, request.essay_b.checksum, 0)
        assert judge.member(request).name == name
        if name == "two":
            assert verdict.winner == "A" and verdict.model == "m2"  # always A
        else:
            assert verdict.model == "m1"
        assert judge.cache_key(request) == judge.member(request).cache_key(request)  # type: ignore[attr-defined]
        names.append(name)
    assert 10 < names.count("one") < 30
    await judge.aclose()


def test_the_shipped_mock_panel_resolves_its_members() -> None:
    config = load_judge_profile("mock_panel")
    assert [m.judge.name for m in config.panel] == ["steady", "biased", "erratic"]
    assert config.panel[1].judge.position_bias == 0.05
    again = judge_config_from_mapping(config.model_dump(mode="json"), "stored")
    assert again == config  # what is stored with a batch rebuilds the same panel


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "mock", "panel": [{"judge": {"kind": "mock"}}]}, "at least two judges"),
        (_panel(name="one"), "distinct names"),
        (_panel(price_input_per_mtok=1.0), "same prices"),
        ({"kind": "mock", "panel": ["mock_default", "no_such_judge"]}, "no_such_judge"),
        ({"kind": "mock", "panel": [{"judge": "mock_default", "share": 0}]}, "share"),
    ],
)
def test_bad_panels_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        judge_config_from_mapping(data, "test")


def test_a_panel_is_priced_as_its_judges_and_resolves_their_templates(tmp_path: Path) -> None:
    priced = _panel(price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    priced["panel"][0]["judge"].update(price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    config = judge_config_from_mapping(priced, "test")
    assert (config.price_input_per_mtok, config.price_output_per_mtok) == (2.0, 8.0)
    profile = tmp_path / "panel.yaml"
    data = _panel(prompt_template="strict.yaml")
    profile.write_text(yaml.safe_dump(data), encoding="utf-8")
    loaded = load_judge_profile(str(profile))
    assert loaded.panel[1].judge.prompt_template == str(tmp_path / "strict.yaml")

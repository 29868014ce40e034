"""Issue 12 item 7 through `cj-run execute`: the judgment cache reuses an answer only for
the identical request (endpoint, model, full rendered messages, sampling parameters,
repeat index), and the summary says which batches the reused answers came from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.base import AssignmentText, EssayText, Judge, JudgeRequest, cache_key_of
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.mock import MockJudge
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.prompts import load_prompt_template
from cj_runner.judges.server import MockJudgeServer
from tests.cli.helpers import ANCHORS, EXAMPLES, LOWER5, anchors, query, run


def _register(db: Path, assignment: str, rubric: Path) -> None:
    result = anchors(
        [
            "register",
            str(ANCHORS),
            "--assignment-id",
            assignment,
            "--grade-scale",
            "eng5",
            "--instructions",
            str(EXAMPLES / "assignment" / "instructions.md"),
            "--rubric",
            str(rubric),
            "--db",
            str(db),
        ]
    )
    assert result.exit_code == 0, result.output


def _judge(tmp: Path, name: str, base_url: str, **extra: Any) -> Path:
    path = tmp / f"{name}.yaml"
    data = {"kind": "openai_compatible", "name": name, "model": "served-mock"}
    path.write_text(yaml.safe_dump({**data, "base_url": base_url, **extra}), encoding="utf-8")
    return path


def _execute(db: Path, judge: Path, assignment: str) -> dict[str, Any]:
    result = run(
        [
            "execute",
            "--db",
            str(db),
            "--json",
            "--inventory",
            str(LOWER5),
            "--profile",
            "mock_lower5",
            "--assignment-id",
            assignment,
            "--judge",
            str(judge),
            "--set",
            "USE_ANCHORS=false",
        ]
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["status"] == "COMPLETED", data
    return data


def test_rubric_temperature_and_server_each_make_a_new_request(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    rubric_b = tmp_path / "rubric_b.md"
    rubric_b.write_text("Reward concision above all.\n", encoding="utf-8")
    _register(db, "phones", EXAMPLES / "assignment" / "rubric.md")
    _register(db, "phones-b", rubric_b)
    with (
        MockJudgeServer(JudgeConfig(seed=4)) as one,
        MockJudgeServer(JudgeConfig(seed=4)) as two,
    ):
        judge = _judge(tmp_path, "local", one.url)
        first = _execute(db, judge, "phones")
        sent = first["calls_sent"]
        assert sent > 0 and first["cache_hits"] == 0 and one.judge_requests == sent

        # the same request again: every answer is reused, nothing is sent
        again = _execute(db, judge, "phones")
        assert again["calls_sent"] == 0 and one.judge_requests == sent
        assert again["cache_hits"] == first["successful_comparisons"]
        assert again["cache_sources"] == {first["batch_id"]: again["cache_hits"]}

        # the same essays under another rubric: no answer is shared
        other_rubric = _execute(db, judge, "phones-b")
        assert other_rubric["cache_hits"] == 0 and other_rubric["cache_sources"] == {}
        assert other_rubric["calls_sent"] == sent and one.judge_requests == 2 * sent
        rubrics = [
            m["content"] for r in one.requests for m in r.body["messages"] if m["role"] == "user"
        ]
        assert sum("Reward concision above all." in text for text in rubrics) == sent

        # another temperature: none shared
        warm = _execute(db, _judge(tmp_path, "warm", one.url, temperature=0.7), "phones")
        assert warm["cache_hits"] == 0 and one.judge_requests == 3 * sent

        # another server (same model, same everything else): none shared
        moved = _execute(db, _judge(tmp_path, "moved", two.url), "phones")
        assert moved["cache_hits"] == 0 and two.judge_requests == sent

    cached = query(db, "SELECT count(*), count(DISTINCT request_key) FROM judgment_cache")
    assert cached == [(4 * first["successful_comparisons"],) * 2]


def test_summary_table_names_the_batches_answers_came_from(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    args = ["--db", str(db), "--inventory", str(LOWER5), "--profile", "mock_lower5", "--json"]
    first = json.loads(run(["execute", *args]).stdout)
    table = run(["execute", *args[:-1]])
    assert table.exit_code == 0, table.output
    assert f"answers reused from batch {first['batch_id']} (" in " ".join(table.output.split())


def _judges(**changes: Any) -> list[Judge]:
    template = load_prompt_template()
    # a model that takes temperature under every kind's rules (Opus 4.7+ would not get it,
    # so its key rightly ignores the temperature)
    base = {"model": "claude-haiku-4-5", "base_url": "http://127.0.0.1:9/v1", **changes}
    return [
        MockJudge(JudgeConfig(**base), template=template),
        OpenAICompatJudge(
            JudgeConfig(kind="openai_compatible", **base), api_key=None, template=template
        ),
        AnthropicJudge(JudgeConfig(kind="anthropic", **base), api_key=None, template=template),
    ]


async def test_every_part_of_the_request_is_in_the_key() -> None:
    a = EssayText("a", "First essay.", "ca")
    b = EssayText("b", "Second essay.", "cb")
    texts = AssignmentText("do this", "write that", "mark so")
    request = JudgeRequest(a, b, texts)
    variants = [
        *(
            JudgeRequest(a, b, replace(texts, **{field: "something else"}))
            for field in ("instructions", "student_prompt", "rubric")
        ),
        JudgeRequest(b, a, texts),  # orientation
        JudgeRequest(a, replace(b, text="Second essay!"), texts),
        JudgeRequest(a, b, texts, repeat_index=1),
    ]
    judges = _judges()
    for other_config in (
        _judges(temperature=0.5),
        _judges(base_url="http://127.0.0.1:10/v1"),
        _judges(model="m2"),
        _judges(max_tokens=100),
    ):
        for judge, other in zip(judges, other_config, strict=True):
            assert cache_key_of(judge, request) != cache_key_of(other, request)
    for judge in judges:
        key = cache_key_of(judge, request)
        assert len({key, *(cache_key_of(judge, v) for v in variants)}) == len(variants) + 1
        # what is not sent (the attempt and ask counters) does not change the key
        assert key == cache_key_of(judge, replace(request, attempt=3, ask_index=2))
        await judge.aclose()

"""Shared helpers for the judge tests."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from cj_runner.judges.base import AssignmentText, EssayText, JudgeRequest
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.server import MockJudgeServer


def make_essay(
    essay_id: str,
    text: str | None = None,
    *,
    is_anchor: bool = False,
    known_grade: str | None = None,
    **metadata: str,
) -> EssayText:
    """An essay with a real SHA-256 checksum of its text."""
    body = (
        text
        if text is not None
        else f"Essay {essay_id}: " + " ".join(f"word{i}" for i in range(40))
    )
    return EssayText(
        essay_id=essay_id,
        text=body,
        checksum=hashlib.sha256(body.encode("utf-8")).hexdigest(),
        is_anchor=is_anchor,
        known_grade=known_grade,
        metadata=dict(metadata),
    )


def make_request(
    a: EssayText | None = None,
    b: EssayText | None = None,
    *,
    attempt: int = 1,
    repeat_index: int = 0,
) -> JudgeRequest:
    """A request for the ordered pair (a, b) with a small assignment."""
    return JudgeRequest(
        essay_a=a or make_essay("a1", "The first essay argues clearly and well."),
        essay_b=b or make_essay("b1", "The second essay rambles."),
        assignment=AssignmentText(
            instructions="Write a persuasive essay.",
            student_prompt="Should school start later?",
            rubric="Argument, evidence, style.",
        ),
        attempt=attempt,
        repeat_index=repeat_index,
    )


T = TypeVar("T")


async def past_the_deadline(
    server: MockJudgeServer,
    call: Coroutine[Any, Any, T],
    deadline_s: float,
    monkeypatch: pytest.MonkeyPatch,
) -> T:
    """Await ``call``, whose request ``server`` holds (a ``delay`` fault): once the server
    has it, move the event loop's clock past ``deadline_s`` instead of waiting, so the
    client's whole-call deadline fires without racing the machine's speed. The clock stays
    moved for the rest of the test (every later deadline is relative to it)."""
    arrived = server.judge_requests + 1
    task = asyncio.ensure_future(call)
    while server.judge_requests < arrived and not task.done():  # rendezvous
        await asyncio.sleep(0.001)
    assert not task.done(), "the call ended before the server held it"
    loop = asyncio.get_running_loop()
    real_time = loop.time
    monkeypatch.setattr(loop, "time", lambda: real_time() + deadline_s + 1.0)
    return await task


@pytest.fixture
def start_server() -> Iterator[Callable[..., MockJudgeServer]]:
    """Start MockJudgeServer instances (127.0.0.1, port 0), stopped after the test."""
    started: list[MockJudgeServer] = []

    def _start(config: JudgeConfig | None = None, **kwargs: Any) -> MockJudgeServer:
        server = MockJudgeServer(config or JudgeConfig(), **kwargs).start()
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()

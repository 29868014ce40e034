"""The official SDKs' batch methods as oracles of serve-mock's batch endpoints (issue 16):
OpenAI files + batches (upload, create, retrieve, list, file content) and Anthropic
Message Batches (create, retrieve, list, results) work against the mock, parse into the
SDKs' own types, and the answers inside are the mock's synchronous answers."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from cj_runner.judges.config import ErrorRates, JudgeConfig, MockBatchConfig, MockServerConfig
from cj_runner.judges.server import MockJudgeServer

KEY = "sk-batch-oracle"


def user(i: int) -> str:
    return (
        f"Which essay is better?\n<essay_a>\nEssay number {i} argues with care and many "
        f"words about school.\n</essay_a>\n<essay_b>\nShort {i}.\n</essay_b>"
    )


@pytest.fixture
def make() -> Iterator[Any]:
    started: list[MockJudgeServer] = []

    def _make(**batch: Any) -> MockJudgeServer:
        errors = batch.pop("errors", ErrorRates())
        config = JudgeConfig(
            model="mock-model",
            errors=errors,
            server=MockServerConfig(batch=MockBatchConfig(**batch)),
        )
        server = MockJudgeServer(config, api_key=KEY).start()
        started.append(server)
        return server

    yield _make
    for server in started:
        server.stop()


def oai(server: MockJudgeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


def ant(server: MockJudgeServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0, timeout=60)


def verdict(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text[text.index("{") : text.rindex("}") + 1])
    return data


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def openai_lines(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "mock-model",
                "messages": [{"role": "user", "content": user(i)}],
                "max_completion_tokens": 200,
            },
        }
        for i in range(n)
    ]


def test_openai_batch_round_trip_with_the_sdk(make: Any) -> None:
    server = make(polls_to_end=2)
    with oai(server) as client:
        uploaded = client.files.create(
            file=("jobs.jsonl", io.BytesIO(_jsonl(openai_lines(5)))), purpose="batch"
        )
        assert isinstance(uploaded, FileObject) and uploaded.purpose == "batch"
        assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"cj_runner_job": "job-1"},
        )
        assert isinstance(batch, Batch) and batch.status == "validating"
        # ends on the third poll: polls, not wall time, drive it
        assert client.batches.retrieve(batch.id).status == "in_progress"
        assert client.batches.retrieve(batch.id).status == "in_progress"
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id and not done.error_file_id
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (5, 5)
        listed = client.batches.list(limit=10)
        assert [b.id for b in listed.data] == [batch.id]
        assert listed.data[0].metadata == {"cj_runner_job": "job-1"}
        lines = client.files.content(done.output_file_id).text.splitlines()
    results = [json.loads(line) for line in lines]
    assert sorted(r["custom_id"] for r in results) == [f"req-{i}" for i in range(5)]
    for result in results:
        assert result["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(result["response"]["body"])
        assert verdict(completion.choices[0].message.content or "")["winner"] in ("A", "B")


def test_openai_batch_answers_match_the_synchronous_endpoint(make: Any) -> None:
    lines = openai_lines(4)
    sync_server, batch_server = make(), make(polls_to_end=0)
    with oai(sync_server) as client:
        sync = [
            verdict(client.chat.completions.create(**line["body"]).choices[0].message.content or "")
            for line in lines
        ]
    with oai(batch_server) as client:
        uploaded = client.files.create(file=("j.jsonl", _jsonl(lines)), purpose="batch")
        job = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = client.batches.retrieve(job.id)
        assert done.output_file_id is not None
        out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    by_id = {r["custom_id"]: r["response"]["body"] for r in out}
    batch = [verdict(by_id[f"req-{i}"]["choices"][0]["message"]["content"]) for i in range(4)]
    assert batch == sync


def test_openai_expiry_and_errors_go_to_the_error_file(make: Any) -> None:
    server = make(polls_to_end=0, expire=0.5, errors=ErrorRates(server_error=0.3))
    with oai(server) as client:
        uploaded = client.files.create(file=("j.jsonl", _jsonl(openai_lines(20))), purpose="batch")
        job = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = client.batches.retrieve(job.id)
        assert done.status == "expired" and done.error_file_id is not None
        errors = [
            json.loads(x) for x in client.files.content(done.error_file_id).text.split("\n") if x
        ]
        output = (
            [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
            if done.output_file_id
            else []
        )
    assert len(errors) + len(output) == 20
    expired = [e for e in errors if e["error"] and e["error"]["code"] == "batch_expired"]
    failed = [e for e in errors if e["response"] and e["response"]["status_code"] >= 500]
    assert expired and failed and output
    assert done.request_counts is not None and done.request_counts.failed == len(errors)


def test_openai_bad_line_fails_the_job(make: Any) -> None:
    server = make()
    lines = openai_lines(2)
    lines[1]["custom_id"] = "req-0"
    with oai(server) as client:
        uploaded = client.files.create(file=("j.jsonl", _jsonl(lines)), purpose="batch")
        job = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert job.status == "failed" and job.errors is not None and job.errors.data


def anthropic_requests(n: int) -> list[Any]:
    return [
        {
            "custom_id": f"req-{i}",
            "params": {
                "model": "mock-model",
                "max_tokens": 200,
                "messages": [{"role": "user", "content": user(i)}],
            },
        }
        for i in range(n)
    ]


def test_anthropic_batch_round_trip_with_the_sdk(make: Any) -> None:
    server = make(polls_to_end=1, expire=0.3, errors=ErrorRates(server_error=0.2))
    with ant(server) as client:
        created = client.messages.batches.create(requests=anthropic_requests(12))
        assert isinstance(created, MessageBatch) and created.processing_status == "in_progress"
        assert created.request_counts.processing == 12
        assert client.messages.batches.retrieve(created.id).processing_status == "in_progress"
        ended = client.messages.batches.retrieve(created.id)
        assert ended.processing_status == "ended" and ended.results_url
        assert [b.id for b in client.messages.batches.list(limit=5).data] == [created.id]
        results = list(client.messages.batches.results(created.id))
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in results)
    kinds = [r.result.type for r in results]
    assert set(kinds) == {"succeeded", "errored", "expired"}
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired) == (
        kinds.count("succeeded"),
        kinds.count("errored"),
        kinds.count("expired"),
    )
    for r in results:
        if r.result.type == "succeeded":
            text = "".join(b.text for b in r.result.message.content if b.type == "text")
            assert verdict(text)["winner"] in ("A", "B")
        elif r.result.type == "errored":
            assert r.result.error.error.type == "api_error"


def test_a_closed_gate_keeps_jobs_running_until_released(make: Any) -> None:
    server = make(polls_to_end=0)
    server.batches.gate.clear()
    with ant(server) as client:
        created = client.messages.batches.create(requests=anthropic_requests(2))
        for _ in range(3):
            assert client.messages.batches.retrieve(created.id).processing_status == "in_progress"
        server.batches.gate.set()
        assert client.messages.batches.retrieve(created.id).processing_status == "ended"


def test_a_held_submission_can_be_dropped(make: Any) -> None:
    server = make()
    hold = server.batches.hold("before_create")
    outcome: dict[str, Any] = {}

    def submit() -> None:
        with ant(server) as client:
            try:
                client.messages.batches.create(requests=anthropic_requests(1))
            except anthropic.APIConnectionError as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=submit)
    thread.start()
    assert hold.arrived.wait(10)
    hold.release("drop")
    thread.join(10)
    assert "error" in outcome and server.batches.created == []

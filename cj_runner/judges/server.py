"""The mock judge served over HTTP (the plumbing): routes, checks, scripted faults.

``cj-run serve-mock`` runs it so anyone can try the real client path without a key, and
the tests start it on ``127.0.0.1`` port 0. Endpoints:

* ``POST /v1/chat/completions`` (also ``/chat/completions``): the OpenAI format, with or
  without ``response_format``.
* ``POST /v1/messages``: the Anthropic format (``anthropic-version`` header required); a
  ``tool_use`` answer when the request has tools, JSON text otherwise.
* ``GET /v1/models`` and ``GET /health``.

What it says, and how, is :mod:`cj_runner.judges.mock_dialects`: the providers' answer
envelopes, error bodies and headers. The served mock reads essays A and B from the
``<essay_a>``/``<essay_b>`` blocks of the user message (any other prompt is answered from
its text features, see :func:`~cj_runner.judges.mock_dialects.essays_of`) and decides like
:class:`~cj_runner.judges.mock.MockJudge`: latent from ``latent_by_checksum`` (SHA-256 hex
of the essay's UTF-8 text) when given, else text features; the n-th request for the same
ordered pair uses ``repeat_index = n``. Drawn errors become the provider's answers:
timeout -> 408, rate_limit -> 429 with ``retry-after``, server_error -> 500, malformed -> a
non-JSON answer, refused -> a refusal. The profile's ``server:`` section adds truncation,
reasoning output, temperature rejection, quota errors, overloads, llama.cpp's 500 on
``json_schema`` and a list of served models. A :class:`FaultScript` overrides answers
request by request for tests.

Here: :class:`MockJudgeServer` (the server's life cycle and what it answers). The HTTP
handler (routes, checks, faults applied) is :mod:`cj_runner.judges.server_handler`; the
fault script and the recorded requests are :mod:`cj_runner.judges.server_faults`, their
names importable from here.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from cj_runner.judges import mock_dialects as dialects
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.mock import decide, draw_rng, text_feature_latent
from cj_runner.judges.mock_batches import BatchDesk
from cj_runner.judges.prompts import estimate_tokens
from cj_runner.judges.server_faults import Fault, FaultKind, FaultScript, RecordedRequest
from cj_runner.judges.server_handler import (
    _Handler,
    _max_tokens,
    _prompt_tokens,
    _requested_model,
    _Server,
    _text_of,
)

__all__ = [
    "Fault",
    "FaultKind",
    "FaultScript",
    "MockJudgeServer",
    "RecordedRequest",
    "ServedOutcome",
]


class MockJudgeServer:
    """The mock judge over HTTP in a background thread; also a context manager."""

    def __init__(
        self,
        config: JudgeConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latent_by_checksum: Mapping[str, float] | None = None,
        faults: FaultScript | None = None,
        api_key: str | None = None,
        keep_requests: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        #: stamps each request's arrival (tests share a virtual clock with the client)
        self.clock = clock
        self.latent_by_checksum = dict(latent_by_checksum or {})
        self.faults = faults
        self.api_key = api_key
        self.requests_seen: collections.Counter[str] = collections.Counter()
        self.request_times: list[float] = []
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=keep_requests)
        self._lock = threading.Lock()
        self._repeats: dict[tuple[str, str], int] = {}
        self._serial = 0
        self._stopping = threading.Event()
        #: the provider batch endpoints (see :mod:`cj_runner.judges.mock_batches`)
        self.batches = BatchDesk(self)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (chosen by the OS when 0 was asked)."""
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://host:port`` (the Anthropic base URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port/v1`` (the OpenAI base URL; the Anthropic judge accepts it too)."""
        return f"{self.root_url}/v1"

    @property
    def judge_requests(self) -> int:
        """Number of POSTs to a judge endpoint so far."""
        with self._lock:
            return len(self.request_times)

    def max_requests_in_window(self, window_s: float = 1.0) -> int:
        """The most judge requests that arrived within any ``window_s`` seconds."""
        with self._lock:
            times = sorted(self.request_times)
        best = 0
        low = 0
        for high, stamp in enumerate(times):
            while stamp - times[low] >= window_s:
                low += 1
            best = max(best, high - low + 1)
        return best

    def start(self) -> MockJudgeServer:
        """Serve in a background thread."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="mock-judge-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the current thread (for ``cj-run serve-mock``) until :meth:`stop` is
        called from another thread, or until ``KeyboardInterrupt``; then call :meth:`stop`."""
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def stop(self) -> None:
        """Stop serving and release the port; wakes requests that are waiting. Idempotent."""
        self._stopping.set()
        if self._serving:
            self._httpd.shutdown()
            self._serving = False
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self._closed:
            self._httpd.server_close()
            self._closed = True

    def __enter__(self) -> MockJudgeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- used by the handler -------------------------------------------------------

    def _record(self, request: RecordedRequest, judge_call: bool) -> None:
        with self._lock:
            self.requests_seen[request.path] += 1
            self.requests.append(request)
            if judge_call:
                self.request_times.append(request.time)

    def _latent(self, text: str) -> float:
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if checksum in self.latent_by_checksum:
            return float(self.latent_by_checksum[checksum])
        return text_feature_latent(text)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def answer_for(self, user_text: str) -> ServedOutcome:
        """The mock's answer to one prompt (any prompt: see
        :func:`~cj_runner.judges.mock_dialects.essays_of`)."""
        text_a, text_b, _ = dialects.essays_of(user_text)
        ca = hashlib.sha256(text_a.encode("utf-8")).hexdigest()
        cb = hashlib.sha256(text_b.encode("utf-8")).hexdigest()
        with self._lock:
            repeat = self._repeats.get((ca, cb), 0)
            self._repeats[(ca, cb)] = repeat + 1
        rng = draw_rng(self.config.seed, ca, cb, repeat, 1)
        decision = decide(self.config, self._latent(text_a), self._latent(text_b), rng)
        # the served behaviours draw after the decision, so they leave verdicts unchanged
        wire = self.config.server
        overloaded = rng.random() < wire.overloaded
        truncated = rng.random() < wire.truncate
        self._wait(decision.latency_s)
        verdict = {
            "winner": decision.winner,
            "confidence": decision.confidence,
            "justification": decision.justification,
        }
        error = decision.error if decision.error is not None else None
        if error is None and overloaded:
            error = "overloaded"
        return ServedOutcome(error, verdict, truncated)

    def reply_for(self, api: dialects.Api, body: dict[str, Any], serial: int) -> dialects.Reply:
        """The mock's whole answer to one well-formed judge request ``body`` of ``api``
        (the same for a synchronous call and a request inside a provider batch)."""
        wire = self.config.server
        model = _requested_model(body, self.config)
        messages = body.get("messages", [])
        user_text = "".join(
            _text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        )
        outcome = self.answer_for(user_text)
        error = outcome.error
        if error in ("timeout", "server_error"):
            return dialects.error_reply(api, error, serial=serial, model=model)
        if error in ("rate_limit", "overloaded"):
            return dialects.error_reply(
                api, error, serial=serial, model=model, retry_after_s=wire.retry_after_s
            )
        if error == "refused":
            refusal = dialects.refusal(
                api, model=model, serial=serial, prompt_tokens=_prompt_tokens(body)
            )
            return dialects.Reply(200, refusal)
        if error == "malformed":
            answer = dialects.Answer("The better essay is A, probably.")
        else:
            structured = "tools" in body if api == "anthropic" else "response_format" in body
            answer = self._verdict_answer(body, outcome, structured)
        if answer.prompt_tokens == 0 and answer.completion_tokens == 0:
            answer = replace(
                answer,
                prompt_tokens=_prompt_tokens(body),
                completion_tokens=estimate_tokens(answer.text),
            )
        build = dialects.anthropic_message if api == "anthropic" else dialects.openai_completion
        return dialects.Reply(200, build(answer, model=model, serial=serial))

    def _verdict_answer(
        self, body: dict[str, Any], outcome: ServedOutcome, structured: bool
    ) -> dialects.Answer:
        wire = self.config.server
        verdict = outcome.verdict
        text = dialects.verdict_text(verdict, structured=structured)
        thinking: str | None = None
        if wire.thinking != "none":
            other = "B" if verdict["winner"] == "A" else "A"
            draft = {"winner": other, "confidence": 2, "justification": "first impression"}
            thinking = (
                f"Let me weigh both essays. At first sight essay {other} looks stronger: "
                f"{json.dumps(draft)}. On reflection the other one is better."
            )
        reasoning = estimate_tokens(thinking or "")
        completion = estimate_tokens(text) + reasoning
        if outcome.truncated:
            allowance = _max_tokens(body, self.config.max_tokens)
            text = text[: max(1, len(text) // 3)]
            completion = max(allowance, reasoning + 1)
        return dialects.Answer(
            text=text,
            structured=verdict if structured else None,
            thinking=thinking,
            thinking_style=wire.thinking,
            truncated=outcome.truncated,
            prompt_tokens=_prompt_tokens(body),
            completion_tokens=completion,
            reasoning_tokens=reasoning,
        )


@dataclass(frozen=True)
class ServedOutcome:
    """One drawn answer of the served mock: an error kind (the mock's kinds, or
    ``overloaded``) or a verdict, and whether the answer is cut off."""

    error: str | None
    verdict: dict[str, Any]
    truncated: bool = False

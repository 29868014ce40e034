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
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from cj_runner.judges import mock_dialects as dialects
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.mock import decide, draw_rng, text_feature_latent
from cj_runner.judges.mock_batches import BatchDesk
from cj_runner.judges.prompts import estimate_tokens

FaultKind = Literal[
    "rate_limit",  # 429, with Retry-After when ``retry_after`` is set
    "server_error",  # ``status`` (default 500) with an error body
    "status",  # any ``status`` with an error body (401, 400, 529, ...)
    "delay",  # wait ``delay_s`` then answer normally (beyond a client timeout)
    "malformed_body",  # 200 with a body that is not JSON
    "malformed_answer",  # 200, well-formed envelope, answer text that is not the JSON
    "empty_answer",  # 200 with an empty answer
    "refusal",  # 200 with a refusal
    "close",  # close the connection without any response
]


@dataclass(frozen=True)
class Fault:
    """One scripted answer of the server (see :data:`FaultKind`)."""

    kind: FaultKind
    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    #: Put the received credentials into the error message, as careless servers do (to
    #: test that clients scrub keys from their errors).
    echo_credentials: bool = False


class FaultScript:
    """Faults by request number: ``faults[n]`` for the n-th judge request (0-based; ``None``
    answers normally), then ``then`` for every later one. ``reject_response_format``
    answers 400 to any OpenAI request carrying ``response_format``. Thread-safe."""

    def __init__(
        self,
        faults: Sequence[Fault | None] = (),
        *,
        then: Fault | None = None,
        reject_response_format: bool = False,
    ) -> None:
        self.faults = list(faults)
        self.then = then
        self.reject_response_format = reject_response_format
        self.served = 0
        self._lock = threading.Lock()

    @classmethod
    def first(cls, n: int, fault: Fault) -> FaultScript:
        """``fault`` for the first ``n`` requests, then normal answers."""
        return cls([fault] * n)

    @classmethod
    def always(cls, fault: Fault) -> FaultScript:
        """``fault`` for every request."""
        return cls(then=fault)

    def next_fault(self) -> Fault | None:
        """The fault for the next request (and count it)."""
        with self._lock:
            index = self.served
            self.served += 1
        return self.faults[index] if index < len(self.faults) else self.then


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the default backlog of 5 drops connections when many calls open at once
    request_queue_size = 128
    owner: MockJudgeServer


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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _matches(model: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


def _max_tokens(body: Any, default: int) -> int:
    body = body if isinstance(body, dict) else {}
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return default


def _prompt_tokens(body: Any) -> int:
    prompt = 0
    if isinstance(body, dict):
        for message in body.get("messages", []):
            if isinstance(message, dict):
                prompt += estimate_tokens(_text_of(message.get("content")))
        if isinstance(body.get("system"), str):
            prompt += estimate_tokens(body["system"])
    return prompt


def _requested_model(body: Any, config: JudgeConfig) -> str:
    # Echo the model asked for, as a server hosting "any" model would.
    requested = body.get("model") if isinstance(body, dict) else None
    return requested if isinstance(requested, str) else config.model


def _status_error(api: dialects.Api, status: int) -> str:
    """The dialect's error name for a scripted HTTP status."""
    if status == 401:
        return "auth"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status == 529 and api == "anthropic":
        return "overloaded"
    return "server_error" if status >= 500 else "bad_request"


_INVALID = object()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server
    _body: Any = None
    _api: dialects.Api = "openai"
    _serial: int = 0

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log on stderr."""

    # --- plumbing ----------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in dialects.id_headers(self._api, self._serial).items():
                self.send_header(name, value)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client has gone (e.g. it timed out)
            self.close_connection = True

    def _json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers)

    def _send_reply(self, reply: dialects.Reply) -> None:
        self._json(reply.status, reply.body, reply.headers)

    def _error(self, name: str, **kwargs: Any) -> None:
        self._send_reply(
            dialects.error_reply(
                self._api, name, serial=self._serial, model=self._model(), **kwargs
            )
        )

    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _INVALID

    # --- routes ------------------------------------------------------------------

    def do_GET(self) -> None:
        owner = self.server.owner
        self._serial = owner._next_serial()
        path = self.path.split("?", 1)[0]
        owner._record(
            RecordedRequest(
                "GET", path, {k.lower(): v for k, v in self.headers.items()}, None, owner.clock()
            ),
            False,
        )
        if owner.batches.handles(path):
            self._batch_route("GET", path, b"")
        elif path in ("/v1/models", "/models"):
            served = owner.config.server.models or [owner.config.model]
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "cj-runner"}
                        for m in served
                    ],
                },
            )
        elif path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._error("bad_request", status=404, message=f"no route {path}")

    def do_POST(self) -> None:
        owner = self.server.owner
        self._serial = owner._next_serial()
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        if owner.batches.handles(path):
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            owner._record(RecordedRequest("POST", path, headers, None, owner.clock()), False)
            self._batch_route("POST", path, raw)
            return
        body = self._body = self._read_body()
        if path in ("/v1/messages", "/messages"):
            self._api = "anthropic"
        elif path not in ("/v1/chat/completions", "/chat/completions"):
            owner._record(RecordedRequest("POST", path, headers, body, owner.clock()), False)
            self._error("bad_request", status=404, message=f"no route {path}")
            return
        owner._record(RecordedRequest("POST", path, headers, body, owner.clock()), True)
        problem = self._check_request(headers, body)
        if problem is not None:
            self._send_reply(problem)
            return
        fault = owner.faults.next_fault() if owner.faults is not None else None
        if fault is not None and self._apply_fault(fault):
            return
        self._answer(body)

    def _batch_route(self, method: str, path: str, raw: bytes) -> None:
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._api = "anthropic" if path.startswith("/v1/messages/") else "openai"
        if owner.api_key is not None:
            given = headers.get("x-api-key") if self._api == "anthropic" else None
            if given is None:
                auth = headers.get("authorization", "")
                given = auth[7:] if auth.lower().startswith("bearer ") else None
            if given != owner.api_key:
                self._error("auth", message="invalid api key")
                return
        if self._api == "anthropic" and "anthropic-version" not in headers:
            self._error("bad_request", message="anthropic-version: header is required")
            return
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        host = headers.get("host") or f"{owner.host}:{owner.port}"
        answer = owner.batches.route(method, path, query, headers, raw, host)
        if answer is None:
            self.close_connection = True
            return
        status, body, content_type = answer
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            for name, value in dialects.id_headers(self._api, self._serial).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _check_request(self, headers: Mapping[str, str], body: Any) -> dialects.Reply | None:
        owner = self.server.owner
        api, serial, model = self._api, self._serial, self._model()

        def error(name: str, **kwargs: Any) -> dialects.Reply:
            return dialects.error_reply(api, name, serial=serial, model=model, **kwargs)

        if owner.api_key is not None:
            given = headers.get("x-api-key") if api == "anthropic" else None
            if given is None:
                auth = headers.get("authorization", "")
                given = auth[7:] if auth.lower().startswith("bearer ") else None
            if given != owner.api_key:
                # Echo what was received, as some real servers do: clients must scrub it.
                return error("auth", message=f"Incorrect API key provided: {given}.")
        if not isinstance(body, dict):
            return error("bad_request", message="the request body must be a JSON object")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            return error("bad_request", message="'model' and 'messages' are required")
        if api == "anthropic":
            if "anthropic-version" not in headers:
                return error("bad_request", message="anthropic-version: header is required")
            if not isinstance(body.get("max_tokens"), int):
                return error("bad_request", message="max_tokens: Field required")
        elif (
            owner.faults is not None
            and owner.faults.reject_response_format
            and "response_format" in body
        ):
            return error(
                "bad_request",
                message="response_format of type json_schema is not supported by this server",
            )
        wire = owner.config.server
        if wire.models and not _matches(model, wire.models):
            return error("model")
        if wire.quota_exhausted:
            return error("quota")
        if "temperature" in body and _matches(model, wire.reject_temperature):
            return error("temperature")
        response_format = body.get("response_format")
        if (
            api == "openai"
            and wire.json_schema_500
            and isinstance(response_format, dict)
            and response_format.get("type") == "json_schema"
        ):
            return error("json_schema")
        return None

    def _apply_fault(self, fault: Fault) -> bool:
        """Answer with ``fault``; returns False when a normal answer must follow."""
        owner = self.server.owner
        if fault.kind == "delay":
            owner._wait(fault.delay_s)
            return False
        if fault.kind == "close":
            self.close_connection = True
            return True
        if fault.kind == "rate_limit":
            retry = float(fault.retry_after) if fault.retry_after is not None else None
            self._error("rate_limit", message="rate limit reached (scripted)", retry_after_s=retry)
        elif fault.kind in ("server_error", "status"):
            message = "scripted error"
            if fault.echo_credentials:
                creds = [self.headers.get(h) for h in ("authorization", "x-api-key")]
                message += ": " + " ".join(c for c in creds if c)
            status = fault.status or 500
            self._error(_status_error(self._api, status), status=status, message=message)
        elif fault.kind == "malformed_body":
            self._send(200, b'{"choices": [ this is not json')
        elif fault.kind == "malformed_answer":
            self._reply(
                dialects.Answer("I think essay A is better, but I will not say it in JSON.")
            )
        elif fault.kind == "empty_answer":
            self._reply(dialects.Answer(""))
        elif fault.kind == "refusal":
            self._refuse()
        return True

    # --- answers -----------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> None:
        self._send_reply(self.server.owner.reply_for(self._api, body, self._serial))

    def _model(self) -> str:
        return _requested_model(self._body, self.server.owner.config)

    def _prompt_tokens(self) -> int:
        return _prompt_tokens(self._body)

    def _reply(self, answer: dialects.Answer) -> None:
        if answer.prompt_tokens == 0 and answer.completion_tokens == 0:
            answer = replace(
                answer,
                prompt_tokens=self._prompt_tokens(),
                completion_tokens=estimate_tokens(answer.text),
            )
        build = (
            dialects.anthropic_message if self._api == "anthropic" else dialects.openai_completion
        )
        self._json(200, build(answer, model=self._model(), serial=self._serial))

    def _refuse(self) -> None:
        body = dialects.refusal(
            self._api, model=self._model(), serial=self._serial, prompt_tokens=self._prompt_tokens()
        )
        self._json(200, body)

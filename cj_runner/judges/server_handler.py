"""The mock judge server's HTTP handler: routes, request checks, scripted faults applied,
answers sent; the request-body helpers it shares with
:class:`~cj_runner.judges.server.MockJudgeServer`."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cj_runner.judges import mock_dialects as dialects
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import estimate_tokens
from cj_runner.judges.server_faults import Fault, RecordedRequest

if TYPE_CHECKING:
    from cj_runner.judges.server import MockJudgeServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the default backlog of 5 drops connections when many calls open at once
    request_queue_size = 128
    owner: MockJudgeServer


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
        refused = owner.batches.take_refusal(self._api)  # a test asked for an error
        if refused is not None:
            self._send_reply(refused)
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

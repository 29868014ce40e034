"""A hostile OpenAI-compatible judge server on 127.0.0.1 for the tests.

Each judge request gets a number (1, 2, ...) and the test's ``script(n, request)`` decides
the answer as a :class:`Reply`: a normal verdict, any status, headers and raw body bytes, a
body trickled one byte at a time that never ends, headers that never finish, a closed
connection. The verdict is a pure function of the prompt (the same request always gets the
same winner), so a run that is killed and resumed asks and hears what an uninterrupted run
does.

Rendezvous instead of timing: :meth:`HostileServer.hold` makes every request from a given
number on wait until :meth:`HostileServer.release`; :meth:`HostileServer.wait_for` blocks
the test until that many requests have arrived. A test therefore knows a process is in the
middle of its batch (and stays there) without racing the clock.

The server counts what it *delivered*: complete 200 answers written to a connection, to
compare with what the client stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

#: Long enough for any rendezvous on a loaded machine; reaching it means a real hang.
PATIENCE_S = 300.0


@dataclass(frozen=True)
class Reply:
    """One answer of the server. ``body`` None: a normal verdict (see :func:`verdict`)."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: send the headers and then one byte of body every ``trickle_s`` seconds, forever
    trickle_s: float | None = None
    #: send the status line and then nothing more, forever
    stall_headers: bool = False
    #: close the connection without answering
    close: bool = False


def winner_of(request: dict[str, Any]) -> str:
    """The verdict for one request: a pure function of its messages."""
    blob = json.dumps(request.get("messages"), sort_keys=True).encode("utf-8")
    return "A" if hashlib.sha256(blob).digest()[0] < 128 else "B"


def answer_body(
    *,
    winner: str = "A",
    justification: str = "A is clearer.",
    usage: Any = None,
    content: str | None = None,
) -> bytes:
    """The bytes of a chat-completions answer (``ensure_ascii`` JSON: a lone surrogate in
    ``justification`` goes out as the escape ``\\udXXX``, as a broken server sends it)."""
    if content is None:
        content = json.dumps({"winner": winner, "confidence": 3, "justification": justification})
    body = {
        "id": "hostile",
        "object": "chat.completion",
        "model": "hostile-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage if usage is not None else {"prompt_tokens": 100, "completion_tokens": 20},
    }
    return json.dumps(body).encode("ascii")


def error_body(message: str) -> bytes:
    """An OpenAI-style error object carrying ``message``."""
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def key_echoes(key: str) -> str:
    """``key`` in every form a careless server might echo it."""
    raw = key.encode("utf-8")
    return " | ".join(
        [
            key,
            key.upper(),
            key.lower(),
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            urllib.parse.quote(key, safe=""),
            f"Bearer {key}",
        ]
    )


Script = Callable[[int, dict[str, Any]], Reply | None]


def normal(_n: int, _request: dict[str, Any]) -> Reply | None:
    """Every request answered normally."""
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: HostileServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that were killed or timed out drop their connections."""


class HostileServer:
    """The server in a background thread; a context manager."""

    def __init__(self, script: Script = normal) -> None:
        self.script = script
        self.requests = 0
        self.delivered = 0  # complete 200 answers written
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._hold_from: int | None = None
        self._released = threading.Event()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL for a judge profile."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def hold(self, from_request: int) -> None:
        """Requests number ``from_request`` and later wait until :meth:`release`."""
        self._released.clear()
        self._hold_from = from_request

    def release(self) -> None:
        """Let every held request (and every later one) through."""
        self._hold_from = None
        self._released.set()

    def wait_for(self, requests: int) -> None:
        """Block until ``requests`` judge requests have arrived."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: self.requests >= requests, PATIENCE_S)
        assert arrived, f"only {self.requests} of {requests} requests arrived"

    def __enter__(self) -> HostileServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- used by the handler -------------------------------------------------------

    def _arrive(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._cond:
            self.requests += 1
            self.bodies.append(body)
            self.headers.append(headers)
            self._cond.notify_all()
            return self.requests

    def _maybe_hold(self, number: int) -> None:
        hold_from = self._hold_from
        if hold_from is not None and number >= hold_from:
            self._released.wait(PATIENCE_S)

    def _delivered(self) -> None:
        with self._cond:
            self.delivered += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        number = owner._arrive(body, {k.lower(): v for k, v in self.headers.items()})
        owner._maybe_hold(number)
        reply = owner.script(number, body) or Reply()
        if reply.close:
            self.close_connection = True
            return
        if reply.stall_headers:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            self.wfile.flush()
            owner._stopping.wait(PATIENCE_S)
            self.close_connection = True
            return
        payload = reply.body if reply.body is not None else answer_body(winner=winner_of(body))
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.trickle_s is not None:
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.flush()
            try:
                while not owner._stopping.wait(reply.trickle_s):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            return
        if reply.status == 200:
            owner._delivered()

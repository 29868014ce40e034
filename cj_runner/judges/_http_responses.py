"""One HTTP exchange of a judge: the POST, its errors classified, the answer read.

Transport errors and error answers become the classified :class:`JudgeError` (table in
:mod:`cj_runner.judges._http`); JSON bodies, request ids and usage fields are read
defensively, every message scrubbed of the API key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import httpx

from cj_runner.errors import JudgeError, JudgeUnavailable, TransientJudgeError
from cj_runner.judges._http_secrets import scrub
from cj_runner.judges.provider_errors import classify, error_body

ClockFn = Callable[[], float]

_SNIPPET = 300


def error_detail(response: httpx.Response, secret: str | None = None) -> str:
    """A short description of an error response: the API's error message if any; scrubbed
    of ``secret`` *before* it is cut, so no part of a key survives the cut."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip().replace("\n", " ")
    else:
        text = json.dumps(body)
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                text = str(err["message"])
            elif isinstance(err, str):
                text = err
            elif isinstance(body.get("message"), str):
                text = str(body["message"])
    return scrub(text, secret)[:_SNIPPET]


def raise_for_status(response: httpx.Response, *, judge_name: str, secret: str | None) -> None:
    """Raise the classified :class:`JudgeError` for a non-2xx response; return on 2xx
    (classes by provider meaning: :mod:`cj_runner.judges.provider_errors`)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = error_detail(response, secret)
    message = f"judge {judge_name}: HTTP {status}" + (f": {detail}" if detail else "")
    raise classify(status, error_body(response.content), response.headers, message)


def raise_transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, *, judge_name: str, secret: str | None
) -> NoReturn:
    """Raise the classified :class:`JudgeError` for an exception from httpx."""
    text = scrub(str(exc) or type(exc).__name__, secret)
    if isinstance(exc, httpx.DecodingError):
        raise TransientJudgeError(
            "malformed", f"judge {judge_name}: undecodable response ({text})"
        ) from None
    if isinstance(exc, httpx.TimeoutException):
        raise TransientJudgeError("timeout", f"judge {judge_name}: timed out ({text})") from None
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        raise JudgeUnavailable("bad_request", f"judge {judge_name}: bad URL ({text})") from None
    raise TransientJudgeError(
        "connection", f"judge {judge_name}: connection failed ({type(exc).__name__}: {text})"
    ) from None


def json_body(response: httpx.Response, *, judge_name: str) -> dict[str, Any]:
    """The response's JSON object, or a ``malformed`` error."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TransientJudgeError(
            "malformed", f"judge {judge_name}: the response body is not JSON"
        ) from None
    if not isinstance(body, dict):
        raise TransientJudgeError(
            "malformed", f"judge {judge_name}: the response body is not a JSON object"
        )
    return body


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: Mapping[str, Any],
    *,
    judge_name: str,
    secret: str | None,
    clock: ClockFn = time.monotonic,
) -> tuple[httpx.Response, float]:
    """POST ``payload``; returns the response and the seconds it took. Transport errors are
    classified; HTTP statuses are left to the caller."""
    start = clock()
    try:
        response = await client.post(url, json=payload)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise_transport_error(exc, judge_name=judge_name, secret=secret)
    return response, clock() - start


def with_judge_name(error: JudgeError, judge_name: str) -> JudgeError:
    """Prefix a parsing error's message with the judge's name (same class and kind)."""
    prefix = f"judge {judge_name}: "
    if not error.message.startswith(prefix):
        error.message = prefix + error.message
        error.args = (error.message,)
    return error


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, with a query string kept at the end (Azure's
    ``?api-version=...``)."""
    base, sep, query = base_url.partition("?")
    return base.rstrip("/") + path + (sep + query if sep else "")


#: Headers carrying the provider's request id: OpenAI (and most compatible servers),
#: Anthropic.
REQUEST_ID_HEADERS = ("x-request-id", "request-id")
_MAX_REQUEST_ID = 200


def request_id(response: httpx.Response, secret: str | None = None) -> str | None:
    """The provider's id for the request ``response`` answers: the ``x-request-id``
    (OpenAI) or ``request-id`` (Anthropic) header, else the body's ``request_id`` (an
    Anthropic error) or ``id`` (the answer's id: ``chatcmpl-...``, ``msg_...``). Printable
    characters only, scrubbed of ``secret`` and then cut to 200 characters: it goes into
    a log line."""
    value: Any = next(
        (response.headers.get(n) for n in REQUEST_ID_HEADERS if n in response.headers), None
    )
    if not value:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            value = next(
                (body[k] for k in ("request_id", "id") if isinstance(body.get(k), str) and body[k]),
                None,
            )
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value if ch.isprintable() and not ch.isspace())
    return scrub(text, secret)[:_MAX_REQUEST_ID] or None


def usage_int(usage: Any, key: str, fallback: int) -> int:
    """An integer usage field, or ``fallback`` when the server did not report it."""
    if isinstance(usage, dict):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return fallback

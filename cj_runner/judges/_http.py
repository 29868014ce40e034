"""Plumbing shared by the HTTP judges: the client, error classification, secret scrubbing.

Classification (what the executor sees):

=====================================  ============================================
HTTP 429                               ``RateLimited`` (``retry_after`` from
                                       ``retry-after-ms`` or ``Retry-After``: seconds
                                       or an HTTP date)
HTTP 5xx, 529 (overloaded), 409        ``TransientJudgeError("server_error")``
HTTP 408, ``httpx.TimeoutException``   ``TransientJudgeError("timeout")``
connection refused/reset, the server   ``TransientJudgeError("connection")``
closing without an answer
HTTP 401, 403                          ``FatalJudgeError("auth")``
other 4xx, unsupported URL scheme      ``FatalJudgeError("bad_request")``
a body that is not the expected JSON   ``TransientJudgeError("malformed")``
=====================================  ============================================

No message ever contains the API key: every message goes through :func:`scrub`.
"""

from __future__ import annotations

import email.utils
import functools
import json
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx

from cj_runner.errors import FatalJudgeError, JudgeError, RateLimited, TransientJudgeError
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import PromptTemplate
from cj_runner.judges.ratelimit import Limiter, RateLimiter, SleepFn

ClockFn = Callable[[], float]

_SNIPPET = 300


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return text


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: do it once per process.
    return httpx.create_ssl_context()


def make_client(
    config: JudgeConfig,
    headers: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One pooled client per judge: ``max_connections`` connections, ``timeout_s`` timeout."""
    limits = httpx.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_connections,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout_s),
        limits=limits,
        headers=dict(headers),
        transport=transport,
        follow_redirects=False,
        verify=_ssl_context(),
    )


def parse_retry_after(
    headers: httpx.Headers, now: Callable[[], datetime] | None = None
) -> float | None:
    """Seconds a 429 asks us to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or
    an HTTP date); ``None`` when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def error_detail(response: httpx.Response) -> str:
    """A short description of an error response: the API's error message if any."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip().replace("\n", " ")
        return text[:_SNIPPET]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_SNIPPET]
        if isinstance(err, str):
            return err[:_SNIPPET]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:_SNIPPET]
    return json.dumps(body)[:_SNIPPET]


def raise_for_status(response: httpx.Response, *, judge_name: str, secret: str | None) -> None:
    """Raise the classified :class:`JudgeError` for a non-2xx response; return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = scrub(error_detail(response), secret)
    message = f"judge {judge_name}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        raise RateLimited(message, retry_after=parse_retry_after(response.headers))
    if status == 408:
        raise TransientJudgeError("timeout", message)
    if status >= 500 or status == 409:
        raise TransientJudgeError("server_error", message)
    if status in (401, 403):
        raise FatalJudgeError("auth", message)
    raise FatalJudgeError("bad_request", message)


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
        raise FatalJudgeError("bad_request", f"judge {judge_name}: bad URL ({text})") from None
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


def usage_int(usage: Any, key: str, fallback: int) -> int:
    """An integer usage field, or ``fallback`` when the server did not report it."""
    if isinstance(usage, dict):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return fallback


class HTTPJudge:
    """What the real judges share: identity and prices, the pooled client, the rate limiter.

    Subclasses build their provider's headers and URL and call this ``__init__``.
    """

    def __init__(
        self,
        config: JudgeConfig,
        *,
        api_key: str | None,
        template: PromptTemplate,
        url: str,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None,
        sleep: SleepFn,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.prompt_hash = template.hash
        self.price_input_per_mtok = config.price_input_per_mtok
        self.price_output_per_mtok = config.price_output_per_mtok
        self.url = url
        self._template = template
        self._secret = api_key
        self._clock = clock
        self._client = make_client(config, dict(headers), transport)
        self._limiter: Limiter = RateLimiter(
            config.requests_per_minute, config.tokens_per_minute, clock=clock, sleep=sleep
        )

    def use_limiter(self, limiter: Limiter) -> None:
        """Wait on ``limiter`` before each request instead of this judge's own buckets
        (a rate limit shared with other processes)."""
        self._limiter = limiter

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, url={self.url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

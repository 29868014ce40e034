"""Plumbing shared by the HTTP judges: the client, error classification, secret scrubbing.

Classification (what the executor sees): HTTP error answers as
:mod:`cj_runner.judges.provider_errors` says, and

=====================================  ============================================
``httpx.TimeoutException``             ``TransientJudgeError("timeout")``
connection refused/reset, the server   ``TransientJudgeError("connection")``
closing without an answer
unsupported URL scheme                 ``JudgeUnavailable("bad_request")``
a body that is not the expected JSON   ``TransientJudgeError("malformed")``
=====================================  ============================================

No message ever contains the API key: every message goes through :func:`scrub`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import httpx

from cj_runner.errors import (
    JudgeError,
    JudgeUnavailable,
    RequestRefused,
    TokenUsage,
    TransientJudgeError,
)
from cj_runner.judges.base import JudgeRequest, Verdict
from cj_runner.judges.capabilities import StructuredForm
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import (
    PromptTemplate,
    estimate_tokens,
    parse_verdict_json,
    render_prompt,
    verdict_from_mapping,
)
from cj_runner.judges.provider_errors import classify, error_body, refused_parameter
from cj_runner.judges.provider_errors import parse_retry_after as parse_retry_after
from cj_runner.judges.ratelimit import Limiter, RateLimiter, SleepFn

ClockFn = Callable[[], float]

_SNIPPET = 300


#: The most bytes of an answer body read; a longer answer fails the call (``malformed``).
MAX_BODY_BYTES = 1024 * 1024


def _secret_forms(secret: str) -> tuple[list[str], list[str]]:
    """The forms of ``secret`` a server might echo: ``(case-insensitive, exact)``.

    Case-insensitive: the key itself (also upper- or lower-cased) and URL-encoded. Exact:
    its base64 and URL-safe base64, at each of the three alignments it can have inside a
    longer encoded text (only the characters that depend on the key alone).
    """
    loose = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    exact: set[str] = set()
    raw = secret.encode("utf-8")
    for offset in range(3):
        padded = b"\0" * offset + raw
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(padded).decode("ascii").rstrip("=")
            start = 4 if offset else 0  # the first group mixes in the bytes before the key
            end = len(text) - (len(text) % 4 or 4)  # the last group may mix in bytes after it
            middle = text[start:end]
            if len(middle) >= 8:
                exact.add(middle)
    return sorted(loose, key=len, reverse=True), sorted(exact, key=len, reverse=True)


@functools.lru_cache(maxsize=8)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    loose, exact = _secret_forms(secret)
    parts = [f"(?i:{re.escape(form)})" for form in loose] + [re.escape(form) for form in exact]
    return re.compile("|".join(parts))


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` a server might echo (itself in any case,
    URL-encoded, base64) replaced by ``***``."""
    if not secret or len(secret) < 4:
        return text.replace(secret, "***") if secret else text
    return _secret_pattern(secret).sub("***", text)


def scrub_bytes(body: bytes, secret: str | None) -> bytes:
    """:func:`scrub` for a response body (UTF-8; other bytes pass through unchanged)."""
    if not secret:
        return body
    text = body.decode("utf-8", errors="surrogateescape")
    cleaned = scrub(text, secret)
    if cleaned is text or cleaned == text:
        return body
    return cleaned.encode("utf-8", errors="surrogateescape")


class _WholeCallTransport(httpx.AsyncBaseTransport):
    """A transport with one deadline for the whole call and a cap on the body.

    httpx's ``timeout`` bounds each network operation, so a server trickling one byte per
    second never times out; here connect, headers and body together must finish within
    ``deadline_s``. The body is read (at most ``max_body`` bytes) and scrubbed of the API
    key before anyone parses it, so no part of an answer can carry the key further.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        deadline_s: float,
        max_body: int,
        secret: str | None,
    ) -> None:
        self._inner = inner
        self._deadline_s = deadline_s
        self._max_body = max_body
        self._secret = secret

    def _timeout(self, request: httpx.Request) -> httpx.ReadTimeout:
        return httpx.ReadTimeout(
            f"no complete answer within timeout_s = {self._deadline_s:g} s", request=request
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._inner.handle_async_request(request)
                chunks: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self._max_body:
                            raise httpx.DecodingError(
                                f"the answer body is larger than {self._max_body} bytes",
                                request=request,
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise self._timeout(request) from None
        body = scrub_bytes(b"".join(chunks), self._secret)
        dropped = (b"content-length", b"content-encoding", b"transfer-encoding")
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in dropped]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds: do it once per process.
    return httpx.create_ssl_context()


def make_client(
    config: JudgeConfig,
    headers: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    secret: str | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> httpx.AsyncClient:
    """One pooled client per judge: ``max_connections`` connections; each call must finish
    within ``timeout_s`` (connect, headers and body together); bodies are read up to
    ``max_body`` bytes (:data:`MAX_BODY_BYTES`) and scrubbed of ``secret`` before they
    are parsed."""
    limits = httpx.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_connections,
    )

    def guarded(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return _WholeCallTransport(
            inner, deadline_s=config.timeout_s, max_body=max_body, secret=secret
        )

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout_s),
        limits=limits,
        verify=_ssl_context(),
        headers={"accept-encoding": "identity", **dict(headers)},
        transport=transport,  # None: httpx's own, and proxies from the environment
        follow_redirects=False,
    )
    # httpx offers no hook around its default and proxy transports (HTTPS_PROXY, ... get
    # transports of their own), so each one is wrapped in place: the deadline, the cap
    # and the scrubbing apply whichever way a call goes out
    client._transport = guarded(client._transport)
    client._mounts = {
        pattern: None if mounted is None else guarded(mounted)
        for pattern, mounted in client._mounts.items()
    }
    return client


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
        self.caps = config.capabilities
        self.price_cached_input_per_mtok = (
            None
            if config.price_cached_input_per_mtok is None
            else config.price_cached_input_per_mtok * config.price_factor
        )
        # what this batch learnt the server refuses: the form in use, parameters left out
        self.form_index = 0
        self.dropped: set[str] = set()
        self.name = config.name
        self.model = config.model
        self.prompt_hash = template.hash
        # the prices paid: in batch-API mode, less the batch discount
        self.price_input_per_mtok = config.price_input_per_mtok * config.price_factor
        self.price_output_per_mtok = config.price_output_per_mtok * config.price_factor
        self.url = url
        self._template = template
        self._secret = api_key
        self._clock = clock
        self._client = make_client(config, dict(headers), transport, secret=api_key)
        self._limiter: Limiter = RateLimiter(
            config.requests_per_minute, config.tokens_per_minute, clock=clock, sleep=sleep
        )

    @property
    def form(self) -> StructuredForm:
        """The structured-output form requests use now."""
        return self.caps.forms[min(self.form_index, len(self.caps.forms) - 1)]

    def build_payload(
        self,
        system: str,
        user: str,
        *,
        form: StructuredForm | None = None,
        max_tokens: int | None = None,
        learned: bool = True,
    ) -> dict[str, Any]:
        """The JSON body of one request (``learned``: with what the server refused so
        far left out)."""
        raise NotImplementedError

    def _request(self, request: JudgeRequest) -> tuple[dict[str, Any], int, int, int]:
        """What one call for ``request`` sends now: the body, the prompt's estimated
        tokens, the form index it was built with, and the answer's token allowance (the
        profile's ceiling for the one retry after a truncated answer)."""
        system, user = render_prompt(self._template, request)
        allowance = (
            self.config.effective_max_tokens_ceiling
            if request.after_truncation
            else self.config.max_tokens
        )
        form_index = self.form_index
        payload = self.build_payload(system, user, form=self.form, max_tokens=allowance)
        return payload, estimate_tokens(system) + estimate_tokens(user), form_index, allowance

    def batch_body(self, request: JudgeRequest) -> dict[str, Any]:
        """The body of ``request`` inside a provider batch job: what :meth:`judge` would
        POST for it now."""
        return self._request(request)[0]

    def batch_verdict(self, body: dict[str, Any], request_body: dict[str, Any]) -> Verdict:
        """The verdict in a batch job's answer ``body`` to ``request_body``; raises the
        classified :class:`JudgeError` as :meth:`judge` would."""
        prompt_tokens = sum(
            estimate_tokens(str(m.get("content", "")))
            for m in request_body.get("messages", [])
            if isinstance(m, dict)
        ) + estimate_tokens(str(request_body.get("system", "")))
        try:
            return self._verdict(body, prompt_tokens, 0.0)
        except JudgeError as error:
            raise with_judge_name(error, self.name) from None

    def _next_form(self, form_index: int) -> str | None:
        """Move on from the structured form a refused request was built with (unless
        another call moved already); what changed, or ``None`` at the last form."""
        if self.form_index > form_index:
            return f"now asking with {self.form!r}"  # another call switched already
        if form_index + 1 >= len(self.caps.forms):
            return None
        self.form_index = form_index + 1
        return f"falling back to {self.form!r}"

    def _fall_back(self, part: str, form_index: int) -> str | None:
        """Stop sending ``part`` (or move to the next structured form) after the server
        refused it; what changed, or ``None`` when nothing is left to fall back to."""
        raise NotImplementedError

    def _verdict(self, body: dict[str, Any], prompt_tokens: int, latency: float) -> Verdict:
        """The verdict in a 2xx answer's JSON body; raises a classified
        :class:`JudgeError` (with the tokens the provider reported)."""
        raise NotImplementedError

    def _read_answer(
        self,
        structured: Mapping[str, Any] | None,
        text: str,
        tokens: TokenUsage,
        latency: float,
        *,
        at_token_limit: bool,
    ) -> Verdict:
        """The verdict of an answer: ``structured`` (a tool call's arguments) when given,
        else the JSON object in ``text``. An answer that does not parse is ``truncated``
        when the provider stopped it at the token limit (``at_token_limit``), else the
        parse error; either carries the tokens the provider reported."""
        try:
            if structured is not None:
                winner, confidence, justification = verdict_from_mapping(structured)
            else:
                winner, confidence, justification = parse_verdict_json(text)
        except JudgeError as error:
            if at_token_limit:
                raise TransientJudgeError(
                    "truncated",
                    f"the answer was cut off at the token limit ({tokens.tokens_out} "
                    f"output tokens, {error.message})",
                    usage=tokens,
                ) from None
            error.usage = tokens
            raise
        return Verdict(
            winner=winner,
            confidence=confidence,
            justification=justification,
            tokens_in=tokens.tokens_in,
            tokens_out=tokens.tokens_out,
            tokens_cached=tokens.tokens_cached,
            latency_s=latency,
            model=self.model,
            prompt_hash=self.prompt_hash,
        )

    async def _exchange(
        self,
        payload: dict[str, Any],
        *,
        sent: set[str],
        form_index: int,
        prompt_tokens: int,
        allowance: int,
    ) -> Verdict:
        """One HTTP request for one verdict, the part both providers share: wait for the
        rate limiter (``prompt_tokens + allowance``), POST ``payload``, fall back when the
        server refuses one of the ``sent`` parts (:class:`RequestRefused`: the caller asks
        again at once), classify an error answer, parse a good one. The verdict and every
        :class:`JudgeError` raised after an answer came carry the provider's request id."""
        await self._limiter.acquire(prompt_tokens + allowance)
        response, latency = await post_json(
            self._client,
            self.url,
            payload,
            judge_name=self.name,
            secret=self._secret,
            clock=self._clock,
        )
        rid = request_id(response, self._secret)
        try:
            status = response.status_code
            if not 200 <= status < 300:
                part = refused_parameter(status, error_body(response.content), sent)
                change = self._fall_back(part, form_index) if part is not None else None
                if change is not None:
                    raise RequestRefused(
                        f"judge {self.name}: HTTP {status}: the server refused {part!r}; {change}"
                    )
            raise_for_status(response, judge_name=self.name, secret=self._secret)
            body = json_body(response, judge_name=self.name)
            try:
                verdict = self._verdict(body, prompt_tokens, latency)
            except JudgeError as error:
                raise with_judge_name(error, self.name) from None
        except JudgeError as error:
            error.request_id = error.request_id or rid
            raise
        return dataclasses.replace(verdict, request_id=rid)

    def use_limiter(self, limiter: Limiter) -> None:
        """Wait on ``limiter`` before each request instead of this judge's own buckets
        (a rate limit shared with other processes)."""
        self._limiter = limiter

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, url={self.url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

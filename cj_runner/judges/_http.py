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


The module is the judges' entry to the plumbing, in parts: ``_http_secrets`` (scrubbing),
``_http_client`` (the pooled client, its deadline and body cap) and ``_http_responses``
(one exchange: the POST, errors classified, answers read); their names are importable
from here. :class:`HTTPJudge` is what the real judges share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from cj_runner.errors import JudgeError, RequestRefused, TokenUsage, TransientJudgeError
from cj_runner.judges._http_client import MAX_BODY_BYTES, make_client
from cj_runner.judges._http_responses import (
    REQUEST_ID_HEADERS,
    ClockFn,
    error_detail,
    join_url,
    json_body,
    post_json,
    raise_for_status,
    raise_transport_error,
    request_id,
    usage_int,
    with_judge_name,
)
from cj_runner.judges._http_secrets import scrub, scrub_bytes
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
from cj_runner.judges.provider_errors import error_body, parse_retry_after, refused_parameter
from cj_runner.judges.ratelimit import Limiter, RateLimiter, SleepFn

__all__ = [
    "MAX_BODY_BYTES",
    "REQUEST_ID_HEADERS",
    "ClockFn",
    "HTTPJudge",
    "error_detail",
    "join_url",
    "json_body",
    "make_client",
    "parse_retry_after",
    "post_json",
    "raise_for_status",
    "raise_transport_error",
    "request_id",
    "scrub",
    "scrub_bytes",
    "usage_int",
    "with_judge_name",
]


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

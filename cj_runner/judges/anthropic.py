"""A judge speaking the Anthropic Messages API.

``POST {base_url}/v1/messages`` with the headers ``x-api-key`` and
``anthropic-version: 2023-06-01`` and a body of ``model``, ``max_tokens``, ``system``,
``messages``, ``temperature`` and - when ``structured_output`` is on - one tool
``record_verdict`` whose ``input_schema`` is :data:`ANSWER_SCHEMA`, forced with
``tool_choice = {"type": "tool", "name": "record_verdict"}``. The verdict is read from the
``tool_use`` block's ``input``, else from JSON in the text blocks. ``stop_reason ==
"refusal"`` is a fatal ``refused`` error; HTTP 529 (overloaded) is a transient server error.
A ``base_url`` ending in ``/v1`` is accepted too (the ``/v1`` is not doubled).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from cj_runner.errors import FatalJudgeError, JudgeError, TransientJudgeError
from cj_runner.judges import _http
from cj_runner.judges.base import JudgeRequest, Verdict, request_key
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import (
    ANSWER_NAME,
    ANSWER_SCHEMA,
    PromptTemplate,
    estimate_tokens,
    parse_verdict_json,
    render_prompt,
    verdict_from_mapping,
)

SleepFn = Callable[[float], Awaitable[None]]

ANTHROPIC_VERSION = "2023-06-01"

VERDICT_TOOL: dict[str, Any] = {
    "name": ANSWER_NAME,
    "description": "Record which essay is better, how confident you are, and why.",
    "input_schema": ANSWER_SCHEMA,
}


def messages_url(base_url: str) -> str:
    """``{root}/v1/messages`` for a base URL given with or without the ``/v1``."""
    root = base_url.rstrip("/")
    root = root.removesuffix("/v1")
    return f"{root}/v1/messages"


class AnthropicJudge(_http.HTTPJudge):
    """A :class:`~cj_runner.judges.base.Judge` for the Anthropic Messages API."""

    def __init__(
        self,
        config: JudgeConfig,
        *,
        api_key: str | None,
        template: PromptTemplate,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {
            "accept": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **config.extra_headers,
        }
        if api_key:
            headers[config.api_key_header or "x-api-key"] = api_key
        super().__init__(
            config,
            api_key=api_key,
            template=template,
            url=messages_url(config.effective_base_url or ""),
            headers=headers,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    def build_payload(self, system: str, user: str) -> dict[str, Any]:
        """The JSON body of one Messages request."""
        payload: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": user}],
            "temperature": self.config.temperature,
        }
        if self.config.structured_output:
            payload["tools"] = [VERDICT_TOOL]
            payload["tool_choice"] = {"type": "tool", "name": ANSWER_NAME}
        return payload

    def cache_key(self, request: JudgeRequest) -> str:
        """The judgment cache key: a hash of the URL, the API version, the request body
        (model, system, messages, sampling parameters, tools) and the repeat index."""
        system, user = render_prompt(self._template, request)
        body = {"anthropic-version": ANTHROPIC_VERSION, **self.build_payload(system, user)}
        return request_key(self.url, body, request.repeat_index)

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Ask the server for one verdict; raises a classified :class:`JudgeError`."""
        system, user = render_prompt(self._template, request)
        prompt_tokens = estimate_tokens(system) + estimate_tokens(user)
        await self._limiter.acquire(prompt_tokens + self.config.max_tokens)
        response, latency = await _http.post_json(
            self._client,
            self.url,
            self.build_payload(system, user),
            judge_name=self.name,
            secret=self._secret,
            clock=self._clock,
        )
        _http.raise_for_status(response, judge_name=self.name, secret=self._secret)
        body = _http.json_body(response, judge_name=self.name)
        try:
            return self._verdict(body, prompt_tokens, latency)
        except JudgeError as error:
            raise _http.with_judge_name(error, self.name) from None

    def _verdict(self, body: dict[str, Any], prompt_tokens: int, latency: float) -> Verdict:
        if body.get("type") == "error":
            raise TransientJudgeError("malformed", "the response is an error object")
        if body.get("stop_reason") == "refusal":
            raise FatalJudgeError("refused", "the model refused to answer")
        content = body.get("content")
        if not isinstance(content, list):
            raise TransientJudgeError("malformed", "the response has no content")
        blocks = [b for b in content if isinstance(b, dict)]
        tool_input = next(
            (
                b.get("input")
                for b in blocks
                if b.get("type") == "tool_use" and b.get("name") == ANSWER_NAME
            ),
            None,
        )
        text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        if isinstance(tool_input, dict):
            winner, confidence, justification = verdict_from_mapping(tool_input)
            answer_chars = str(tool_input)
        else:
            winner, confidence, justification = parse_verdict_json(text)
            answer_chars = text
        usage = body.get("usage")
        return Verdict(
            winner=winner,
            confidence=confidence,
            justification=justification,
            tokens_in=_http.usage_int(usage, "input_tokens", prompt_tokens),
            tokens_out=_http.usage_int(usage, "output_tokens", estimate_tokens(answer_chars)),
            latency_s=latency,
            model=self.model,
            prompt_hash=self.prompt_hash,
        )

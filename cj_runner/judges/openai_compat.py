"""A judge speaking the OpenAI chat-completions API (OpenAI, vLLM, llama.cpp, Ollama, gateways).

``POST {base_url}/chat/completions`` with the system and user messages, ``temperature``,
``max_tokens`` (or ``max_completion_tokens``, see the profile) and, when
``structured_output`` is on, ``response_format = {"type": "json_schema", "json_schema":
{"name": "record_verdict", "schema": ANSWER_SCHEMA, "strict": true}}`` - the body the
official client sends for structured outputs. A server that answers 400/422 naming
``response_format`` gets the same request once more without it, and the judge remembers to
ask for JSON in the text from then on. A refusal (``message.refusal`` set, or
``finish_reason == "content_filter"``) is a fatal ``refused`` error.
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
)

SleepFn = Callable[[float], Awaitable[None]]


def response_format() -> dict[str, Any]:
    """The ``response_format`` asking for an answer that matches :data:`ANSWER_SCHEMA`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": ANSWER_NAME, "schema": ANSWER_SCHEMA, "strict": True},
    }


def _mentions_response_format(response: httpx.Response) -> bool:
    if response.status_code not in (400, 422):
        return False
    text = response.text.lower()
    return any(word in text for word in ("response_format", "json_schema", "response format"))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers send a list of content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class OpenAICompatJudge(_http.HTTPJudge):
    """A :class:`~cj_runner.judges.base.Judge` for OpenAI-compatible chat-completions servers."""

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
        self.structured_output = config.structured_output
        headers = {"accept": "application/json", **config.extra_headers}
        if api_key:
            if config.api_key_header:
                headers[config.api_key_header] = api_key
            else:
                headers["authorization"] = f"Bearer {api_key}"
        super().__init__(
            config,
            api_key=api_key,
            template=template,
            url=f"{config.effective_base_url or ''}/chat/completions",
            headers=headers,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    def build_payload(self, system: str, user: str, *, structured: bool) -> dict[str, Any]:
        """The JSON body of one chat-completions request."""
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": self.config.temperature,
            self.config.max_tokens_param: self.config.max_tokens,
        }
        if structured:
            payload["response_format"] = response_format()
        return payload

    def cache_key(self, request: JudgeRequest) -> str:
        """The judgment cache key: a hash of the URL, the request body this judge sends
        first for ``request`` (model, messages, sampling parameters, answer format) and
        the repeat index."""
        system, user = render_prompt(self._template, request)
        payload = self.build_payload(system, user, structured=self.config.structured_output)
        return request_key(self.url, payload, request.repeat_index)

    async def _send(self, payload: dict[str, Any], tokens: int) -> tuple[httpx.Response, float]:
        await self._limiter.acquire(tokens)
        return await _http.post_json(
            self._client,
            self.url,
            payload,
            judge_name=self.name,
            secret=self._secret,
            clock=self._clock,
        )

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Ask the server for one verdict; raises a classified :class:`JudgeError`."""
        system, user = render_prompt(self._template, request)
        prompt_tokens = estimate_tokens(system) + estimate_tokens(user)
        budget_tokens = prompt_tokens + self.config.max_tokens
        structured = self.structured_output
        payload = self.build_payload(system, user, structured=structured)
        response, latency = await self._send(payload, budget_tokens)
        if structured and _mentions_response_format(response):
            # The server lacks structured output: ask for JSON in the text from now on.
            self.structured_output = False
            payload = self.build_payload(system, user, structured=False)
            response, latency = await self._send(payload, budget_tokens)
        _http.raise_for_status(response, judge_name=self.name, secret=self._secret)
        body = _http.json_body(response, judge_name=self.name)
        try:
            return self._verdict(body, prompt_tokens, latency)
        except JudgeError as error:
            raise _http.with_judge_name(error, self.name) from None

    def _verdict(self, body: dict[str, Any], prompt_tokens: int, latency: float) -> Verdict:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise TransientJudgeError("malformed", "the response has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise TransientJudgeError("malformed", "the response has no message")
        refusal = message.get("refusal")
        if refusal:
            text = _http.scrub(str(refusal), self._secret)[:200]
            raise FatalJudgeError("refused", f"the model refused: {text}")
        if choice.get("finish_reason") == "content_filter":
            raise FatalJudgeError("refused", "the answer was withheld by a content filter")
        content = _content_text(message.get("content"))
        winner, confidence, justification = parse_verdict_json(content)
        usage = body.get("usage")
        return Verdict(
            winner=winner,
            confidence=confidence,
            justification=justification,
            tokens_in=_http.usage_int(usage, "prompt_tokens", prompt_tokens),
            tokens_out=_http.usage_int(usage, "completion_tokens", estimate_tokens(content)),
            latency_s=latency,
            model=self.model,
            prompt_hash=self.prompt_hash,
        )

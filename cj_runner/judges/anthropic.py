"""A judge speaking the Anthropic Messages API.

``POST {base_url}/v1/messages`` (a ``base_url`` ending in ``/v1`` is accepted too, and a
query string stays at the end) with the headers ``x-api-key`` and ``anthropic-version``
(:data:`ANTHROPIC_VERSION`, the value the official ``anthropic`` SDK sends) and a body of
``model``, ``max_tokens``, ``system``, ``messages`` and what the model takes
(:mod:`cj_runner.judges.capabilities`): ``temperature``/``top_p`` (not for Opus 4.7 and
later, nor with thinking), ``thinking``, ``output_config.effort``, and the
structured-output form: one tool ``record_verdict`` whose ``input_schema`` is
:data:`ANSWER_SCHEMA`, forced with ``tool_choice``; ``output_config.format`` with the
schema (``json_schema``); or JSON in the text (``none``).

Every call is one HTTP request; a refused form or parameter (for example "Thinking may
not be enabled when tool_choice forces tool use", or "`temperature` is deprecated for this
model") makes the judge switch to the next form or leave the parameter out, and raise
:class:`~cj_runner.errors.RequestRefused` so the caller asks again at once.

The verdict is read from the ``tool_use`` block's ``input``, else from JSON in the text
blocks; thinking blocks are never read. ``stop_reason == "max_tokens"`` without a
readable verdict is ``truncated``; ``stop_reason == "refusal"`` is a fatal ``refused``
error. Usage counts ``input_tokens`` plus the cache's read and creation tokens as input
(``cache_read_input_tokens`` are the cached ones).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from cj_runner.errors import (
    FatalJudgeError,
    TokenUsage,
    TransientJudgeError,
)
from cj_runner.judges import _http
from cj_runner.judges.base import JudgeRequest, Verdict, request_key
from cj_runner.judges.capabilities import StructuredForm
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import (
    ANSWER_NAME,
    ANSWER_SCHEMA,
    PromptTemplate,
    estimate_tokens,
    render_prompt,
)

SleepFn = Callable[[float], Awaitable[None]]

#: ``anthropic-version`` as the official SDK sends it (anthropic 2.14: ``_constants.py``).
ANTHROPIC_VERSION = "2026-10-21"

#: ``output_config.effort`` values the API takes.
_EFFORTS = ("low", "medium", "high", "xhigh", "max")

VERDICT_TOOL: dict[str, Any] = {
    "name": ANSWER_NAME,
    "description": "Record which essay is better, how confident you are, and why.",
    "input_schema": ANSWER_SCHEMA,
}


def messages_url(base_url: str) -> str:
    """``{root}/v1/messages`` for a base URL given with or without the ``/v1`` (a query
    string stays at the end)."""
    root, sep, query = base_url.partition("?")
    root = root.rstrip("/").removesuffix("/v1")
    return f"{root}/v1/messages" + (sep + query if sep else "")


def anthropic_usage(usage: Any, prompt_tokens: int, output_text: str) -> TokenUsage:
    """Tokens of an Anthropic ``usage`` object (estimates for the fields it lacks)."""
    cached = _http.usage_int(usage, "cache_read_input_tokens", 0)
    created = _http.usage_int(usage, "cache_creation_input_tokens", 0)
    return TokenUsage(
        tokens_in=_http.usage_int(usage, "input_tokens", prompt_tokens) + cached + created,
        tokens_out=_http.usage_int(usage, "output_tokens", estimate_tokens(output_text)),
        tokens_cached=cached,
    )


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

    def _sends(self, part: str, dropped: set[str]) -> bool:
        if part in dropped:
            return False
        if part == "temperature":
            return self.caps.temperature
        if part == "top_p":
            return self.caps.top_p
        return True

    def build_payload(
        self,
        system: str,
        user: str,
        *,
        form: StructuredForm | None = None,
        max_tokens: int | None = None,
        learned: bool = True,
    ) -> dict[str, Any]:
        """The JSON body of one Messages request (``learned``: with what the server
        refused so far left out)."""
        config = self.config
        form = self.form if form is None else form
        dropped = self.dropped if learned else set()
        limit = max_tokens or config.max_tokens
        payload: dict[str, Any] = {
            "model": config.model,
            "max_tokens": limit,
            "system": system,
            "messages": [{"role": "user", "content": user}],
        }
        if config.temperature is not None and self._sends("temperature", dropped):
            payload["temperature"] = config.temperature
        if config.top_p is not None and self._sends("top_p", dropped):
            payload["top_p"] = config.top_p
        if config.thinking is not None and self._sends("thinking", dropped):
            if config.thinking == "enabled":
                # the thinking budget comes on top of the answer's allowance
                payload["max_tokens"] = limit + config.thinking_budget_tokens
                payload["thinking"] = {
                    "type": "enabled",
                    "budget_tokens": config.thinking_budget_tokens,
                }
            else:
                payload["thinking"] = {"type": "adaptive"}
        output_config: dict[str, Any] = {}
        if config.reasoning_effort in _EFFORTS and self._sends("reasoning_effort", dropped):
            output_config["effort"] = config.reasoning_effort
        if form == "json_schema":
            output_config["format"] = {"type": "json_schema", "schema": ANSWER_SCHEMA}
        elif form == "tool":
            payload["tools"] = [VERDICT_TOOL]
            payload["tool_choice"] = {"type": "tool", "name": ANSWER_NAME}
        if output_config:
            payload["output_config"] = output_config
        return payload

    def cache_key(self, request: JudgeRequest) -> str:
        """The judgment cache key: a hash of the URL, the API version, the request body
        this judge sends first (model, system, messages, sampling and thinking parameters,
        answer format; before any fallback the server forces) and the repeat index."""
        system, user = render_prompt(self._template, request)
        payload = self.build_payload(system, user, form=self.caps.forms[0], learned=False)
        body = {"anthropic-version": ANTHROPIC_VERSION, **payload}
        return request_key(self.url, body, request.repeat_index)

    def _fall_back(self, part: str, form_index: int) -> str | None:
        if part in ("response_format", "tools"):
            return self._next_form(form_index)
        if part == "max_tokens":
            return None  # required by the API: nothing to fall back to
        self.dropped.add(part)
        return f"leaving out {part!r} from now on"

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Ask the server for one verdict (one HTTP request); raises a classified
        :class:`JudgeError`."""
        payload, prompt_tokens, form_index, _allowance = self._request(request)
        sent = set(payload) - {"model", "messages", "system", "max_tokens", "tool_choice"}
        if "output_config" in sent:
            sent.discard("output_config")
            if "format" in payload["output_config"]:
                sent.add("response_format")
            if "effort" in payload["output_config"]:
                sent.add("reasoning_effort")
        return await self._exchange(
            payload,
            sent=sent,
            form_index=form_index,
            prompt_tokens=prompt_tokens,
            allowance=int(payload["max_tokens"]),
        )

    def _verdict(self, body: dict[str, Any], prompt_tokens: int, latency: float) -> Verdict:
        if body.get("type") == "error":
            raise TransientJudgeError("malformed", "the response is an error object")
        content = body.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        # thinking and redacted_thinking blocks are never read
        text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        tool_input = next(
            (
                b.get("input")
                for b in blocks
                if b.get("type") == "tool_use" and b.get("name") == ANSWER_NAME
            ),
            None,
        )
        answer_chars = str(tool_input) if isinstance(tool_input, dict) else text
        tokens = anthropic_usage(body.get("usage"), prompt_tokens, answer_chars)
        stop = body.get("stop_reason")
        if stop == "refusal":
            raise FatalJudgeError("refused", "the model refused to answer", usage=tokens)
        if not isinstance(content, list):
            raise TransientJudgeError("malformed", "the response has no content", usage=tokens)
        return self._read_answer(
            tool_input if isinstance(tool_input, dict) else None,
            text,
            tokens,
            latency,
            at_token_limit=stop in ("max_tokens", "model_context_window_exceeded"),
        )

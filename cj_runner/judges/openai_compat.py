"""A judge speaking the OpenAI chat-completions API (OpenAI, vLLM, llama.cpp, Ollama, gateways).

``POST {base_url}/chat/completions`` (a query string in ``base_url``, such as Azure's
``?api-version=``, stays at the end) with the system and user messages and what the
model takes (:mod:`cj_runner.judges.capabilities`): ``temperature``/``top_p``, the token
limit as ``max_tokens`` or ``max_completion_tokens``, ``reasoning_effort``, and the
structured-output form (``response_format`` ``json_schema`` - the body the official client
sends -, ``json_object`` with ``schema``, a forced function tool, or none).

Every call is one HTTP request. When the server refuses a form or a parameter (400/422,
or a 5xx naming ``response_format`` as llama.cpp's server does), the judge switches to the
next form or leaves the parameter out from then on, and raises
:class:`~cj_runner.errors.RequestRefused`: the caller asks again at once (another request,
counted against the budget like any other).

The answer is read from ``message.content`` (reasoning inside ``<think>`` tags is skipped),
or from a ``tool_calls`` function's ``arguments``. ``finish_reason == "length"`` without a
readable verdict is ``truncated``; a refusal (``message.refusal``, or ``finish_reason ==
"content_filter"``) is a fatal ``refused`` error. Errors after an answer carry its usage.
"""

from __future__ import annotations

import asyncio
import json
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
    BOUNDED_ANSWER_SCHEMA,
    PromptTemplate,
    estimate_tokens,
    render_prompt,
)

SleepFn = Callable[[float], Awaitable[None]]


def response_format(form: StructuredForm = "json_schema") -> dict[str, Any] | None:
    """The ``response_format`` of a structured-output form (``None``: no such field)."""
    if form == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": ANSWER_NAME, "schema": ANSWER_SCHEMA, "strict": True},
        }
    if form == "json_object":
        return {"type": "json_object", "schema": BOUNDED_ANSWER_SCHEMA}
    return None


VERDICT_FUNCTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": ANSWER_NAME,
        "description": "Record which essay is better, how confident you are, and why.",
        "parameters": ANSWER_SCHEMA,
        "strict": True,
    },
}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers send a list of content parts
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return ""


def _tool_arguments(message: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded ``arguments`` of the answer's function call, if it made one."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return None
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                continue
        if isinstance(arguments, dict):
            return arguments
    return None


def openai_usage(usage: Any, prompt_tokens: int, output_text: str) -> TokenUsage:
    """Tokens of an OpenAI ``usage`` object (estimates for the fields it lacks)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return TokenUsage(
        tokens_in=_http.usage_int(usage, "prompt_tokens", prompt_tokens),
        tokens_out=_http.usage_int(usage, "completion_tokens", estimate_tokens(output_text)),
        tokens_cached=_http.usage_int(details, "cached_tokens", 0),
    )


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
        self.max_tokens_param = config.capabilities.max_tokens_param
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
            url=_http.join_url(config.effective_base_url or "", "/chat/completions"),
            headers=headers,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    @property
    def structured_output(self) -> bool:
        """Whether requests ask for a structured answer (any form but ``none``)."""
        return self.form != "none"

    def build_payload(
        self,
        system: str,
        user: str,
        *,
        form: StructuredForm | None = None,
        max_tokens: int | None = None,
        learned: bool = True,
    ) -> dict[str, Any]:
        """The JSON body of one chat-completions request (``learned``: with what the
        server refused so far left out)."""
        config = self.config
        form = self.form if form is None else form
        dropped = self.dropped if learned else set()
        payload: dict[str, Any] = {
            "model": config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        }
        if config.temperature is not None and self._sends("temperature", dropped):
            payload["temperature"] = config.temperature
        if config.top_p is not None and self._sends("top_p", dropped):
            payload["top_p"] = config.top_p
        limit_param = self.max_tokens_param if learned else self.caps.max_tokens_param
        payload[limit_param] = max_tokens or config.max_tokens
        if config.reasoning_effort is not None and self._sends("reasoning_effort", dropped):
            payload["reasoning_effort"] = config.reasoning_effort
        fmt = response_format(form)
        if fmt is not None:
            payload["response_format"] = fmt
        elif form == "tool":
            payload["tools"] = [VERDICT_FUNCTION]
            payload["tool_choice"] = {"type": "function", "function": {"name": ANSWER_NAME}}
        return payload

    def cache_key(self, request: JudgeRequest) -> str:
        """The judgment cache key: a hash of the URL, the request body this judge sends
        first for ``request`` (model, messages, sampling parameters, answer format; before
        any fallback the server forces, so the key does not change during a run) and the
        repeat index."""
        system, user = render_prompt(self._template, request)
        payload = self.build_payload(system, user, form=self.caps.forms[0], learned=False)
        return request_key(self.url, payload, request.repeat_index)

    def _sends(self, part: str, dropped: set[str]) -> bool:
        if part in dropped:
            return False
        if part == "temperature":
            return self.caps.temperature
        if part == "top_p":
            return self.caps.top_p
        if part == "reasoning_effort":
            return self.caps.reasoning
        return True

    def _fall_back(self, part: str, form_index: int) -> str | None:
        """Stop sending ``part`` (or move to the next form); what changed, or ``None``
        when there is nothing left to fall back to."""
        if part in ("response_format", "tools"):
            return self._next_form(form_index)
        if part == "max_tokens":
            self.max_tokens_param = "max_completion_tokens"
            return "sending max_completion_tokens instead"
        self.dropped.add(part)
        return f"leaving out {part!r} from now on"

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Ask the server for one verdict (one HTTP request); raises a classified
        :class:`JudgeError`."""
        payload, prompt_tokens, form_index, max_tokens = self._request(request)
        return await self._exchange(
            payload,
            sent=set(payload) - {"model", "messages"},
            form_index=form_index,
            prompt_tokens=prompt_tokens,
            allowance=max_tokens,
        )

    def _verdict(self, body: dict[str, Any], prompt_tokens: int, latency: float) -> Verdict:
        choices = body.get("choices")
        usage = body.get("usage")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise TransientJudgeError(
                "malformed",
                "the response has no choices",
                usage=openai_usage(usage, prompt_tokens, ""),
            )
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise TransientJudgeError(
                "malformed",
                "the response has no message",
                usage=openai_usage(usage, prompt_tokens, ""),
            )
        content = _content_text(message.get("content"))
        tokens = openai_usage(usage, prompt_tokens, content)
        refusal = message.get("refusal")
        if refusal:
            text = _http.scrub(str(refusal), self._secret)[:200]
            raise FatalJudgeError("refused", f"the model refused: {text}", usage=tokens)
        finish = choice.get("finish_reason")
        if finish == "content_filter":
            raise FatalJudgeError(
                "refused", "the answer was withheld by a content filter", usage=tokens
            )
        return self._read_answer(
            _tool_arguments(message), content, tokens, latency, at_token_limit=finish == "length"
        )

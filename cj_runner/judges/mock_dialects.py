"""What the served mock says, in each provider's own words: answer envelopes, error bodies
and headers of the OpenAI chat-completions and Anthropic Messages APIs.

The shapes follow the providers' documentation and the official client libraries' types
(``openai.types.chat.ChatCompletion``, ``anthropic.types.Message``, their error bodies);
the tests parse every answer and error with those libraries. :mod:`.server` does the HTTP
plumbing and calls these functions; nothing here touches a socket.

Errors by name (:func:`error_reply`):

==================  =====================================  =================================
name                OpenAI                                 Anthropic
==================  =====================================  =================================
``auth``            401 ``invalid_api_key``                401 ``authentication_error``
``rate_limit``      429 ``rate_limit_exceeded``            429 ``rate_limit_error``
                    + ``retry-after``, ``retry-after-ms``  + ``retry-after``
``quota``           429 ``insufficient_quota``             400 credit balance too low
``timeout``         408                                    408 ``timeout_error``
``server_error``    500 ``server_error``                   500 ``api_error``
``overloaded``      503 ``server_error`` (+ retry-after)   529 ``overloaded_error``
``temperature``     400 ``unsupported_value`` (param)      400 "`temperature` is deprecated"
``json_schema``     500 like llama.cpp's server            (not applicable)
``model``           404 ``model_not_found``                404 ``not_found_error``
``permission``      403 ``request_forbidden``              403 ``permission_error``
``not_found``       404 ``invalid_request_error``          404 ``not_found_error``
``bad_request``     400 ``invalid_request_error``          400 ``invalid_request_error``
==================  =====================================  =================================

Every answer carries a request id: ``x-request-id`` (OpenAI), ``request-id`` (Anthropic,
also ``request_id`` in error bodies).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cj_runner.judges.prompts import ANSWER_NAME

Api = Literal["openai", "anthropic"]

#: llama-cpp-python's server (0.3.36) answering ``response_format: {"type": "json_schema"}``
_JSON_SCHEMA_REJECTION = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", "
    "line 376, in create_chat_completion\n    POST /v1/chat/completions"
)


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def request_id(api: Api, serial: int) -> str:
    """A request id in the provider's style."""
    return f"req_mock{serial:012d}" if api == "anthropic" else f"req_{serial:032x}"


def id_headers(api: Api, serial: int) -> dict[str, str]:
    """The request-id header every answer carries."""
    name = "request-id" if api == "anthropic" else "x-request-id"
    return {name: request_id(api, serial)}


def _openai_error(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Reply(status, body, dict(headers or {}))


def _anthropic_error(
    status: int, message: str, type_: str, serial: int, headers: Mapping[str, str] | None = None
) -> Reply:
    body = {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": request_id("anthropic", serial),
    }
    return Reply(status, body, dict(headers or {}))


def _retry_headers(api: Api, retry_after_s: float | None) -> dict[str, str]:
    if retry_after_s is None:
        return {}
    headers = {"retry-after": str(max(0, math.ceil(retry_after_s)))}
    if api == "openai":  # the OpenAI client reads the millisecond form first
        headers["retry-after-ms"] = str(round(retry_after_s * 1000))
    return headers


def error_reply(
    api: Api,
    name: str,
    *,
    serial: int = 0,
    model: str = "",
    message: str | None = None,
    retry_after_s: float | None = None,
    status: int | None = None,
) -> Reply:
    """The provider's answer for the error ``name`` (see the module table). ``message``
    replaces the provider's wording; ``status`` picks the status of ``bad_request`` and
    ``server_error`` (any 4xx or 5xx)."""
    if api == "anthropic":
        return _anthropic_reply(name, serial, model, message, retry_after_s, status)
    return _openai_reply(name, model, message, retry_after_s, status)


def _openai_reply(
    name: str, model: str, message: str | None, retry_after_s: float | None, status: int | None
) -> Reply:
    if name == "auth":
        text = (
            message
            or "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        )
        return _openai_error(401, text, "invalid_request_error", code="invalid_api_key")
    if name == "rate_limit":
        text = message or (
            f"Rate limit reached for {model or 'the model'} in organization org-mock on "
            "requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 1s."
        )
        headers = {
            **_retry_headers("openai", retry_after_s),
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after_s or 1:g}s",
        }
        return _openai_error(429, text, "requests", code="rate_limit_exceeded", headers=headers)
    if name == "quota":
        text = message or (
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        return _openai_error(429, text, "insufficient_quota", code="insufficient_quota")
    if name == "timeout":
        return _openai_error(408, message or "Request timed out.", "timeout")
    if name == "overloaded":
        text = message or "The engine is currently overloaded, please try again later."
        headers = _retry_headers("openai", retry_after_s)
        return _openai_error(503, text, "server_error", headers=headers)
    if name == "temperature":
        text = message or (
            "Unsupported value: 'temperature' does not support 0 with this model. "
            "Only the default (1) value is supported."
        )
        return _openai_error(
            400, text, "invalid_request_error", param="temperature", code="unsupported_value"
        )
    if name == "json_schema":
        return _openai_error(500, message or _JSON_SCHEMA_REJECTION, "internal_server_error")
    if name == "model":
        text = message or (f"The model `{model}` does not exist or you do not have access to it.")
        return _openai_error(404, text, "invalid_request_error", code="model_not_found")
    if name == "permission":
        # what OpenAI answers a request from where it does not serve (403)
        text = message or "Country, region, or territory not supported"
        return _openai_error(
            403, text, "request_forbidden", code="unsupported_country_region_territory"
        )
    if name == "not_found":
        return _openai_error(404, message or "Not found.", "invalid_request_error")
    if name == "server_error":
        text = message or "The server had an error while processing your request. Sorry about that!"
        return _openai_error(status or 500, text, "server_error")
    return _openai_error(status or 400, message or "Invalid request.", "invalid_request_error")


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_reply(
    name: str,
    serial: int,
    model: str,
    message: str | None,
    retry_after_s: float | None,
    status: int | None,
) -> Reply:
    if name == "auth":
        return _anthropic_error(401, message or "invalid x-api-key", "authentication_error", serial)
    if name == "rate_limit":
        text = message or (
            "This request would exceed the rate limit for your organization of 50 requests "
            "per minute. Please try again later."
        )
        headers = {
            **_retry_headers("anthropic", retry_after_s),
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
        }
        return _anthropic_error(429, text, "rate_limit_error", serial, headers)
    if name == "quota":
        text = message or (
            "Your credit balance is too low to access the Anthropic API. Please go to "
            "Plans & Billing to upgrade or purchase credits."
        )
        return _anthropic_error(400, text, "invalid_request_error", serial)
    if name == "timeout":
        return _anthropic_error(408, message or "Request timed out", "timeout_error", serial)
    if name == "overloaded":
        headers = _retry_headers("anthropic", retry_after_s)
        return _anthropic_error(529, message or "Overloaded", "overloaded_error", serial, headers)
    if name == "temperature":
        text = message or "`temperature` is deprecated for this model."
        return _anthropic_error(400, text, "invalid_request_error", serial)
    if name == "model":
        return _anthropic_error(404, message or f"model: {model}", "not_found_error", serial)
    if name == "permission":
        text = message or "Your API key does not have permission to use the specified resource."
        return _anthropic_error(403, text, "permission_error", serial)
    if name == "not_found":
        return _anthropic_error(404, message or "Not found.", "not_found_error", serial)
    if name == "server_error":
        code = status or 500
        kind = _ANTHROPIC_TYPES.get(code, "api_error")
        return _anthropic_error(code, message or "Internal server error", kind, serial)
    code = status or 400
    kind = _ANTHROPIC_TYPES.get(code, "invalid_request_error" if code < 500 else "api_error")
    return _anthropic_error(code, message or "Invalid request.", kind, serial)


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """What the mock answers: the final text (or structured input), optional reasoning,
    whether it was cut off, and the tokens to report."""

    text: str
    structured: Mapping[str, Any] | None = None
    thinking: str | None = None
    thinking_style: Literal["none", "inline", "blocks"] = "none"
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


def openai_completion(answer: Answer, *, model: str, serial: int) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    content = answer.text
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if answer.thinking is not None:
        if answer.thinking_style == "inline":
            message["content"] = f"<think>\n{answer.thinking}\n</think>\n\n{content}"
        else:
            message["reasoning_content"] = answer.thinking
    usage: dict[str, Any] = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return {
        "id": f"chatcmpl-mock{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "length" if answer.truncated else "stop",
            }
        ],
        "usage": usage,
        "system_fingerprint": "fp_mock",
    }


def anthropic_message(answer: Answer, *, model: str, serial: int) -> dict[str, Any]:
    """A Messages API ``message`` object."""
    content: list[dict[str, Any]] = []
    if answer.thinking is not None and answer.thinking_style == "blocks":
        content.append(
            {"type": "thinking", "thinking": answer.thinking, "signature": f"mocksig{serial}"}
        )
    text = answer.text
    if answer.thinking is not None and answer.thinking_style == "inline":
        text = f"<think>\n{answer.thinking}\n</think>\n\n{text}"
    if answer.structured is not None and not answer.truncated:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_mock{serial}",
                "name": ANSWER_NAME,
                "input": dict(answer.structured),
            }
        )
        stop = "tool_use"
    else:
        if text:
            content.append({"type": "text", "text": text})
        stop = "max_tokens" if answer.truncated else "end_turn"
    return {
        "id": f"msg_mock{serial}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def refusal(api: Api, *, model: str, serial: int, prompt_tokens: int) -> dict[str, Any]:
    """A refusal: Anthropic ``stop_reason: refusal``; OpenAI ``message.refusal``."""
    if api == "anthropic":
        return {
            "id": f"msg_mock{serial}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": "refusal",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        }
    return {
        "id": f"chatcmpl-mock{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I can't help with that request.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "total_tokens": prompt_tokens,
        },
    }


# --------------------------------------------------------------------------- prompts

_TEMPLATE_BLOCKS = (
    re.compile(r"<essay_a>\s*(.*?)\s*</essay_a>", re.DOTALL),
    re.compile(r"<essay_b>\s*(.*?)\s*</essay_b>", re.DOTALL),
)
_LABELLED = re.compile(
    r"(?:essay|response|text|answer|submission)\s*(?:1|a)\s*[:\-)\]]*\s*(.*?)\s*"
    r"(?:essay|response|text|answer|submission)\s*(?:2|b)\s*[:\-)\]]*\s*(.*)",
    re.DOTALL | re.IGNORECASE,
)


def essays_of(user_text: str) -> tuple[str, str, bool]:
    """Essays A and B of a prompt, and whether it was the runner's own template.

    The template's ``<essay_a>``/``<essay_b>`` blocks first; else text after labels such as
    "Essay A:" and "Essay B:" (or 1 and 2, "Response", "Text"); else the two halves of the
    message by words. Any prompt gets an answer, decided from its text features.
    """
    match_a, match_b = (pattern.search(user_text) for pattern in _TEMPLATE_BLOCKS)
    if match_a is not None and match_b is not None:
        return match_a.group(1), match_b.group(1), True
    labelled = _LABELLED.search(user_text)
    if labelled is not None and labelled.group(1).strip() and labelled.group(2).strip():
        return labelled.group(1), labelled.group(2), False
    words = user_text.split()
    half = len(words) // 2
    return " ".join(words[:half]), " ".join(words[half:]), False


def verdict_text(verdict: Mapping[str, Any], *, structured: bool) -> str:
    """The answer as text: bare JSON when structured output was asked, else fenced JSON."""
    answer = json.dumps(dict(verdict))
    return answer if structured else f"```json\n{answer}\n```"

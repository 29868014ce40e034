"""What a model accepts in a request: built-in rules per model family, profile overrides.

Providers differ per model in what a request may carry: OpenAI's reasoning models (the
``gpt-5`` family and the ``o`` series) refuse ``temperature`` and ``top_p`` and want
``max_completion_tokens``; Anthropic's newest models refuse ``temperature``; a local
llama.cpp server refuses ``response_format: json_schema`` but accepts ``json_object`` with
a ``schema``. :func:`resolve_capabilities` picks the first matching rule of
:data:`RULES` and applies the profile's overrides; the judge then builds each request
from the result, and still falls back at run time when a server refuses a form or a
parameter the rules did not know about (see ``docs/judges.md``).

Structured-output forms, tried in order until one is accepted:

``json_schema``  OpenAI: ``response_format = {"type": "json_schema", "json_schema":
                 {...}}``; Anthropic: ``output_config = {"format": {"type":
                 "json_schema", "schema": ...}}``
``json_object``  OpenAI-compatible: ``response_format = {"type": "json_object",
                 "schema": ...}`` (llama.cpp's server constrains the answer to the schema;
                 OpenAI itself ignores the extra key)
``tool``         one tool ``record_verdict`` whose parameters are the answer schema,
                 forced with ``tool_choice``
``none``         no structured-output field: the prompt asks for JSON in the text
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

StructuredForm = Literal["json_schema", "json_object", "tool", "none"]
STRUCTURED_FORMS: tuple[StructuredForm, ...] = ("json_schema", "json_object", "tool", "none")

OPENAI_FORMS: tuple[StructuredForm, ...] = ("json_schema", "json_object", "none")
ANTHROPIC_FORMS: tuple[StructuredForm, ...] = ("tool", "none")


@dataclass(frozen=True)
class Capabilities:
    """What requests to one model carry.

    Attributes:
        temperature: whether ``temperature`` is sent (when the profile sets one).
        top_p: whether ``top_p`` is sent (when the profile sets one).
        max_tokens_param: the request field of the token limit.
        reasoning: whether the model takes a reasoning setting (OpenAI
            ``reasoning_effort``, Anthropic ``thinking`` and ``output_config.effort``).
        forms: structured-output forms, the first one tried first.
        rule: the name of the built-in rule that matched.
    """

    temperature: bool
    top_p: bool
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"]
    reasoning: bool
    forms: tuple[StructuredForm, ...]
    rule: str


@dataclass(frozen=True)
class Rule:
    """A built-in rule: for ``kind`` and a model name matching ``pattern``."""

    name: str
    kind: str
    pattern: str
    caps: Capabilities
    note: str

    def matches(self, kind: str, model: str) -> bool:
        """Whether the rule applies (the model name without a ``provider/`` prefix)."""
        bare = model.rsplit("/", 1)[-1].lower()
        return kind == self.kind and re.fullmatch(self.pattern, bare) is not None


def _caps(
    rule: str,
    *,
    temperature: bool = True,
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
    reasoning: bool = False,
    forms: tuple[StructuredForm, ...] = OPENAI_FORMS,
) -> Capabilities:
    return Capabilities(
        temperature=temperature,
        top_p=temperature,
        max_tokens_param=max_tokens_param,
        reasoning=reasoning,
        forms=forms,
        rule=rule,
    )


#: The built-in rules, first match wins (documented as a table in docs/judges.md).
RULES: tuple[Rule, ...] = (
    Rule(
        "openai-reasoning",
        "openai_compatible",
        r"(gpt-5|o[1-9])([-.].*)?",
        _caps(
            "openai-reasoning",
            temperature=False,
            max_tokens_param="max_completion_tokens",
            reasoning=True,
        ),
        "OpenAI reasoning models refuse temperature/top_p other than the default; "
        "max_completion_tokens; reasoning_effort",
    ),
    Rule(
        "openai-chat",
        "openai_compatible",
        r"(gpt-4o|gpt-4\.1|chatgpt-4o)([-.].*)?",
        _caps("openai-chat", max_tokens_param="max_completion_tokens"),
        "OpenAI chat models: max_completion_tokens (max_tokens is deprecated)",
    ),
    Rule(
        "openai-compatible",
        "openai_compatible",
        r".*",
        _caps("openai-compatible", reasoning=True),
        "any other OpenAI-compatible server (vLLM, llama.cpp, Ollama, gateways): "
        "max_tokens; reasoning_effort only when the profile sets it",
    ),
    Rule(
        "anthropic-legacy",
        "anthropic",
        r"claude-(3.*|(opus|sonnet)-4|(opus|sonnet)-4-[0-6]|haiku-4-5|(opus|sonnet|haiku)-4-[0-6]-\d{8})",
        _caps("anthropic-legacy", reasoning=True, forms=ANTHROPIC_FORMS),
        "Claude 3.x and 4.x up to 4.6: temperature accepted",
    ),
    Rule(
        "anthropic",
        "anthropic",
        r".*",
        _caps("anthropic", temperature=False, reasoning=True, forms=ANTHROPIC_FORMS),
        "Claude Opus 4.7 and later, and any model not named above: temperature is "
        "deprecated (400), so it is not sent",
    ),
)


def builtin_capabilities(kind: str, model: str) -> Capabilities:
    """The first built-in rule's capabilities for ``kind`` and ``model``."""
    for rule in RULES:
        if rule.matches(kind, model):
            return rule.caps
    return _caps("none")  # the mock: nothing of this is sent anywhere


def forms_from(
    chain: tuple[StructuredForm, ...], setting: bool | StructuredForm
) -> tuple[StructuredForm, ...]:
    """The forms to try for a profile's ``structured_output`` setting.

    ``true``: the rule's chain; ``false``: ``none`` only; a form: that form, then the
    rest of the rule's chain after it (``none`` last).
    """
    if setting is True:
        return chain
    if setting is False or setting == "none":
        return ("none",)
    rest = chain[chain.index(setting) + 1 :] if setting in chain else ("none",)
    return (setting, *[f for f in rest if f != setting])


def resolve_capabilities(
    kind: str,
    model: str,
    *,
    structured_output: bool | StructuredForm = True,
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None,
    thinking: bool = False,
) -> Capabilities:
    """Capabilities of ``model`` with the profile's overrides applied.

    With ``thinking`` on, Anthropic does not take ``temperature`` and refuses a forced
    tool call, so the tool form is left out unless the profile names it.
    """
    caps = builtin_capabilities(kind, model)
    forms = forms_from(caps.forms, structured_output)
    temperature, top_p = caps.temperature, caps.top_p
    if thinking and kind == "anthropic":
        temperature = top_p = False
        if structured_output is True:
            forms = tuple(f for f in forms if f != "tool") or ("none",)
    return replace(
        caps,
        temperature=temperature,
        top_p=top_p,
        max_tokens_param=max_tokens_param or caps.max_tokens_param,
        forms=forms,
    )

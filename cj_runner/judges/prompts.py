"""The judge prompt: template loading, rendering with safe delimiters, answer parsing.

The template lives in YAML (``system:`` and ``user:``) with the placeholders
``{instructions} {student_prompt} {rubric} {essay_a} {essay_b}``. Rendering substitutes
them in one pass, so text inserted into the prompt is never scanned again. Every
``<tag>``/``</tag>`` delimiter the template uses is neutralised inside inserted text
(``<`` and ``>`` become ``‹`` and ``›``), so an essay cannot close its own block and pass
for instructions. :attr:`PromptTemplate.hash` (SHA-256 over both templates and
:data:`ANSWER_SCHEMA`) is stored with each comparison and keys the judgment cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import yaml

from cj_runner.core.models import Winner
from cj_runner.errors import ConfigError, TransientJudgeError
from cj_runner.judges.base import JudgeRequest

#: JSON schema of the judge's answer (strict-mode compatible: every property required,
#: no additional properties; the confidence range is an ``enum`` because some servers
#: ignore ``minimum``/``maximum``).
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B"]},
        "confidence": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "justification": {"type": "string"},
    },
    "required": ["winner", "confidence", "justification"],
    "additionalProperties": False,
}

#: The longest justification a grammar-constrained server is allowed to write (the
#: ``json_object`` form with a schema: llama.cpp, vLLM): their grammar closes the string
#: there, where a small model would otherwise ramble inside it until the token limit (an
#: answer cut off, with no verdict). The prompt asks for one or two sentences.
JUSTIFICATION_MAX_CHARS = 600

#: :data:`ANSWER_SCHEMA` with the justification bounded by :data:`JUSTIFICATION_MAX_CHARS`
#: (only for the ``json_object`` form: OpenAI's strict ``json_schema`` mode refuses
#: keywords it does not support, so that form keeps the plain schema).
BOUNDED_ANSWER_SCHEMA: dict[str, Any] = {
    **ANSWER_SCHEMA,
    "properties": {
        **ANSWER_SCHEMA["properties"],
        "justification": {"type": "string", "maxLength": JUSTIFICATION_MAX_CHARS},
    },
}

#: Name of the structured answer (OpenAI ``json_schema.name``, Anthropic tool name).
ANSWER_NAME = "record_verdict"

#: Output tokens assumed for one answer when planning (a short JSON object).
EXPECTED_OUTPUT_TOKENS = 80

PLACEHOLDERS = frozenset({"instructions", "student_prompt", "rubric", "essay_a", "essay_b"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TAG_IN_TEMPLATE = re.compile(r"</([A-Za-z_][A-Za-z0-9_]*)\s*>")
_EMPTY_TEXT = "(none given)"


@dataclass(frozen=True)
class PromptTemplate:
    """System and user templates, and the hash identifying them with the answer schema."""

    system: str
    user: str
    hash: str


def _template_hash(system: str, user: str) -> str:
    payload = json.dumps(
        {"system": system, "user": user, "answer_schema": ANSWER_SCHEMA},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_prompt_template(system: str, user: str, source: str = "<template>") -> PromptTemplate:
    """Check a pair of templates and build a :class:`PromptTemplate`.

    Raises:
        ConfigError: an unknown placeholder, or ``{essay_a}``/``{essay_b}`` missing.
    """
    for name in _PLACEHOLDER.findall(system + "\n" + user):
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            raise ConfigError(
                f"prompt template {source}: unknown placeholder {{{name}}} (known: {known})"
            )
    found = set(_PLACEHOLDER.findall(user))
    missing = [p for p in ("essay_a", "essay_b") if p not in found]
    if missing:
        raise ConfigError(
            f"prompt template {source}: the user template must contain "
            + " and ".join("{" + m + "}" for m in missing)
        )
    return PromptTemplate(system=system, user=user, hash=_template_hash(system, user))


def load_prompt_template(path: Path | None = None) -> PromptTemplate:
    """Load the prompt template YAML at ``path``, or the packaged ``prompt_templates.yaml``.

    Raises:
        ConfigError: unreadable file, invalid YAML, missing ``system``/``user`` strings, or a
            bad placeholder.
    """
    if path is None:
        source = "prompt_templates.yaml (packaged)"
        text = (
            resources.files("cj_runner.judges")
            .joinpath("prompt_templates.yaml")
            .read_text(encoding="utf-8")
        )
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read prompt template {source}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"prompt template {source} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt template {source}: expected a mapping with system and user")
    unknown = sorted(set(data) - {"system", "user"})
    if unknown:
        raise ConfigError(f"prompt template {source}: unknown field '{unknown[0]}'")
    system, user = data.get("system"), data.get("user")
    if not isinstance(system, str) or not isinstance(user, str):
        raise ConfigError(f"prompt template {source}: 'system' and 'user' must both be text")
    return make_prompt_template(system, user, source)


@functools.lru_cache(maxsize=32)
def _delimiter_pattern(template_text: str) -> re.Pattern[str] | None:
    tags = sorted(set(_TAG_IN_TEMPLATE.findall(template_text)))
    if not tags:
        return None
    names = "|".join(re.escape(t) for t in tags)
    return re.compile(rf"<(\s*/?\s*(?:{names})\b[^<>]*)>", re.IGNORECASE)


def neutralise_delimiters(text: str, template: PromptTemplate) -> str:
    """Make every delimiter tag of ``template`` inside ``text`` harmless (``‹tag›``)."""
    pattern = _delimiter_pattern(template.system + "\n" + template.user)
    if pattern is None or "<" not in text:
        return text
    return pattern.sub(lambda m: "‹" + m.group(1) + "›", text)


def _fill(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def render_prompt(template: PromptTemplate, request: JudgeRequest) -> tuple[str, str]:
    """Render ``(system, user)`` for one ordered pair: ``essay_a`` in A, ``essay_b`` in B."""
    assignment = request.assignment

    def clean(text: str, empty: str = _EMPTY_TEXT) -> str:
        return neutralise_delimiters(text, template) if text.strip() else empty

    values = {
        "instructions": clean(assignment.instructions),
        "student_prompt": clean(assignment.student_prompt),
        "rubric": clean(assignment.rubric),
        "essay_a": clean(request.essay_a.text, ""),
        "essay_b": clean(request.essay_b.text, ""),
    }
    return _fill(template.system, values), _fill(template.user, values)


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


def estimate_call_tokens(template: PromptTemplate, request: JudgeRequest) -> tuple[int, int]:
    """Estimated ``(input, output)`` tokens of one judge call, for planning and budgets."""
    system, user = render_prompt(template, request)
    return estimate_tokens(system) + estimate_tokens(user), EXPECTED_OUTPUT_TOKENS


_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.DOTALL)


def _find_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    first: dict[str, Any] | None = None
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            obj = cast(dict[str, Any], value)
            if "winner" in obj:
                return obj
            first = first if first is not None else obj
        start = text.find("{", start + 1)
    return first


def verdict_from_mapping(obj: Mapping[str, Any]) -> tuple[Winner, int, str]:
    """Check a decoded answer object and return ``(winner, confidence, justification)``.

    Raises:
        TransientJudgeError: kind ``malformed``, when a field is missing or out of range.
    """
    raw_winner = obj.get("winner")
    if not isinstance(raw_winner, str):
        raise TransientJudgeError("malformed", "answer has no 'winner' field")
    token = raw_winner.strip().upper().removeprefix("ESSAY").strip()
    if token not in ("A", "B"):
        raise TransientJudgeError("malformed", "answer's 'winner' is neither A nor B")
    winner: Winner = "A" if token == "A" else "B"
    raw_conf = obj.get("confidence")
    try:
        if isinstance(raw_conf, bool) or raw_conf is None:
            raise ValueError
        conf_value = float(raw_conf)
    except (TypeError, ValueError):
        raise TransientJudgeError("malformed", "answer's 'confidence' is not a number") from None
    if not conf_value.is_integer() or not 1 <= conf_value <= 5:
        raise TransientJudgeError("malformed", "answer's 'confidence' is not an integer 1-5")
    justification = obj.get("justification", "")
    if not isinstance(justification, str):
        justification = json.dumps(justification, ensure_ascii=False)
    return winner, int(conf_value), justification.strip()


_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)\s*>", re.IGNORECASE)


def final_answer(text: str) -> str:
    """``text`` without the model's reasoning: ``<think>...</think>`` blocks (and
    ``<thinking>``, ``<reasoning>``) are removed; a block never closed runs to the end of
    the text (the answer was cut off while thinking); text before a lone closing tag is
    reasoning whose opening tag the server swallowed (some chat templates do)."""
    text = _THINK_BLOCK.sub("", text)
    closing = list(_THINK_CLOSE.finditer(text))
    if closing:
        text = text[closing[-1].end() :]
    opening = _THINK_OPEN.search(text)
    if opening:
        text = text[: opening.start()]
    return text


def parse_verdict_json(text: str) -> tuple[Winner, int, str]:
    """Parse the judge's JSON answer, tolerating ```` ```json ```` fences and prose around it.

    Reasoning text (:func:`final_answer`) is never read: the verdict is the final answer.

    Raises:
        TransientJudgeError: kind ``malformed`` for an empty answer, no JSON object, or an
            object that does not match :data:`ANSWER_SCHEMA`.
    """
    text = final_answer(text or "")
    if not text.strip():
        raise TransientJudgeError("malformed", "empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        obj = _find_object(candidate)
        if obj is not None:
            return verdict_from_mapping(obj)
    raise TransientJudgeError("malformed", "answer contains no JSON object")

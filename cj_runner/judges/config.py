"""Judge profiles: the validated settings of one judge (mock, OpenAI-compatible, Anthropic).

A *judge profile* is a YAML mapping of :class:`JudgeConfig` fields at top level, found by
name under ``profiles/`` or given as a path. A CJ profile may embed the same mapping under
``judge:``; :func:`judge_config_from_mapping` validates that section. Unknown keys are
refused, and an API key is never part of a profile: ``api_key_env`` names the environment
variable that holds it.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cj_runner.config import available_profiles, resolve_profile_path
from cj_runner.errors import ConfigError
from cj_runner.judges.capabilities import Capabilities, StructuredForm, resolve_capabilities

JudgeKind = Literal["mock", "openai_compatible", "anthropic"]

#: Base URLs used when a real judge's profile leaves ``base_url`` empty.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai_compatible": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_base_url(value: str) -> str:
    """``value`` without a trailing ``/`` when it is a usable base URL: http or https, a
    host, a valid port, no whitespace or control characters.

    Raises:
        ValueError: saying what is wrong (never echoing the value: it may hold a token).
    """
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in value):
        raise ValueError("must not contain spaces, line breaks or control characters")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port (1-65535)") from None
    if not parts.hostname:
        raise ValueError("has no host name")
    if port == 0:
        raise ValueError("has an invalid port (1-65535)")
    return value.rstrip("/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyConfig(_Strict):
    """Simulated latency of the mock judge.

    ``zero`` never sleeps; ``fixed`` sleeps ``median_ms``; ``lognormal`` sleeps
    ``median_ms * exp(sigma * z)`` with ``z`` a seeded standard normal draw.
    """

    distribution: Literal["zero", "fixed", "lognormal"] = "zero"
    median_ms: float = Field(default=0.0, ge=0.0)
    sigma: float = Field(default=0.5, ge=0.0)


class ErrorRates(_Strict):
    """Per-attempt probabilities of each error kind of the mock judge (their sum <= 1)."""

    timeout: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_limit: float = Field(default=0.0, ge=0.0, le=1.0)
    server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    malformed: float = Field(default=0.0, ge=0.0, le=1.0)
    refused: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_at_most_one(self) -> ErrorRates:
        total = self.timeout + self.rate_limit + self.server_error + self.malformed + self.refused
        if total > 1.0 + 1e-9:
            raise ValueError(f"error rates add up to {total:g}; their sum must be <= 1")
        return self

    @property
    def total(self) -> float:
        """Probability that one attempt fails, any kind."""
        return self.timeout + self.rate_limit + self.server_error + self.malformed + self.refused


class MockBatchConfig(_Strict):
    """How the served mock's provider batch APIs behave (``server.batch``)."""

    #: status requests a job answers "in progress" before it ends (0: it ends on the first)
    polls_to_end: int = Field(default=1, ge=0)
    #: share of a job's requests that expire unanswered (a seeded draw per ``custom_id``)
    expire: float = Field(default=0.0, ge=0.0, le=1.0)


class MockServerConfig(_Strict):
    """How ``serve-mock`` speaks beyond the verdict (mock only): provider behaviours a real
    client must survive. Rates are per request, drawn from their own seeded stream so the
    verdicts stay those of the same profile without them."""

    #: share of answers cut off at the length limit (``finish_reason: length``,
    #: ``stop_reason: max_tokens``), billed at the request's whole token allowance
    truncate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: reasoning output before the answer: ``inline`` (``<think>…</think>`` in the text,
    #: holding a *different* verdict), ``blocks`` (Anthropic thinking blocks; OpenAI
    #: ``reasoning_content``)
    thinking: Literal["none", "inline", "blocks"] = "none"
    #: models (shell patterns) that answer 400 to any request carrying ``temperature``
    reject_temperature: list[str] = Field(default_factory=list)
    #: every request fails for lack of money: OpenAI 429 ``insufficient_quota``,
    #: Anthropic 400 "credit balance is too low"
    quota_exhausted: bool = False
    #: answer HTTP 500 to ``response_format: {"type": "json_schema"}`` like llama.cpp's
    #: Python server (which accepts ``json_object`` with a ``schema``)
    json_schema_500: bool = False
    #: share of requests answered 529 ``overloaded_error`` (Anthropic) or 503 (OpenAI)
    overloaded: float = Field(default=0.0, ge=0.0, le=1.0)
    #: ``retry-after`` (seconds) sent with drawn 429s and overloads
    retry_after_s: float = Field(default=1.0, ge=0.0)
    #: the models served (shell patterns); others answer 404 ``model_not_found``.
    #: Empty: any model is served (and echoed).
    models: list[str] = Field(default_factory=list)
    #: the provider batch endpoints (OpenAI Batch, Anthropic Message Batches)
    batch: MockBatchConfig = Field(default_factory=MockBatchConfig)


class JudgeConfig(_Strict):
    """Everything needed to build one judge; see ``profiles/*.yaml`` for commented examples."""

    kind: JudgeKind = "mock"
    name: str = Field(default="mock", min_length=1, max_length=200)
    model: str = Field(default="mock-judge-1", min_length=1, max_length=200)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, max_length=64)
    #: Header that carries the key instead of the API's usual one (``Authorization: Bearer``
    #: for OpenAI-compatible servers, ``x-api-key`` for Anthropic), e.g. ``api-key`` for
    #: Azure OpenAI.
    api_key_header: str | None = Field(default=None, min_length=1)
    #: ``null`` leaves it out of the request; a model that refuses it (see
    #: :mod:`cj_runner.judges.capabilities`) never gets it.
    temperature: float | None = Field(default=0.0, ge=0.0, le=2.0)
    #: Sent when set (and the model takes it).
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    #: The token allowance of the one retry after an answer was cut off at ``max_tokens``
    #: (default: four times ``max_tokens``).
    max_tokens_ceiling: int | None = Field(default=None, ge=1)
    #: Which request field carries ``max_tokens`` for OpenAI-compatible servers: newer
    #: OpenAI models want ``max_completion_tokens``; most local servers know
    #: ``max_tokens``. Empty: the built-in rule for the model decides.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None
    #: OpenAI ``reasoning_effort`` / Anthropic ``output_config.effort`` (sent when set).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    #: Anthropic extended thinking: ``enabled`` (with ``thinking_budget_tokens``) or
    #: ``adaptive``. Thinking text is never read as the verdict.
    thinking: Literal["enabled", "adaptive"] | None = None
    thinking_budget_tokens: int = Field(default=2048, ge=1024)
    #: One deadline for the whole call (connect, headers and body together); finite.
    timeout_s: float = Field(default=60.0, gt=0.0, allow_inf_nan=False)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    price_input_per_mtok: float = Field(default=0.0, ge=0.0)
    price_output_per_mtok: float = Field(default=0.0, ge=0.0)
    #: Price of input tokens read from the provider's prompt cache (empty: the input price).
    price_cached_input_per_mtok: float | None = Field(default=None, ge=0.0)
    requests_per_minute: float | None = Field(default=None, gt=0.0)
    tokens_per_minute: float | None = Field(default=None, gt=0.0)
    max_connections: int = Field(default=32, ge=1)
    #: ``true``: the model's built-in chain of structured-output forms; ``false``: JSON in
    #: the text only; or the form to start with: ``json_schema``, ``json_object``,
    #: ``tool``, ``none`` (a refused form falls back to the next one).
    structured_output: bool | StructuredForm = True
    #: Optional path to a prompt template YAML (``system:`` and ``user:``); relative paths
    #: are resolved against the profile's folder. Empty: the packaged template.
    prompt_template: str | None = None
    #: Send comparisons through the provider's batch API (OpenAI Batch, Anthropic Message
    #: Batches): a wave is one job, answered within 24 hours at the batch price.
    batch: bool = False
    #: The batch API's discount on every price of this profile (0.5: half price).
    batch_discount: float = Field(default=0.5, ge=0.0, lt=1.0)
    #: Seconds between two status requests of a running batch job.
    batch_poll_s: float = Field(default=30.0, gt=0.0, allow_inf_nan=False)
    # --- mock only ---
    seed: int = 0
    latent_column: str = "true_score"
    anchor_grade_latent: dict[str, float] | None = None
    noise: float = Field(default=1.0, ge=0.0)
    position_bias: float = Field(default=0.0, ge=-1.0, le=1.0)
    always: Literal["A", "B"] | None = None
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    errors: ErrorRates = Field(default_factory=ErrorRates)
    server: MockServerConfig = Field(default_factory=MockServerConfig)
    #: A panel: several judges in one batch, each with a share of the calls (see
    #: docs/panels.md). The panel's own fields other than ``name`` and ``seed`` (which
    #: spreads the calls) are not used.
    panel: list[PanelMember] = Field(default_factory=list)
    #: A panel's share of each wave's pairs also asked of a second judge (empty: 0.1;
    #: the setting ``PANEL_DOUBLE_SHARE`` wins). Panels only.
    double_share: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _panel(self) -> JudgeConfig:
        return _check_panel(self)

    @field_validator("anchor_grade_latent", mode="before")
    @classmethod
    def _grade_keys(cls, value: Any) -> Any:
        # YAML reads grades such as 1, 2, 3 as numbers; grades are text.
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("extra_headers", mode="before")
    @classmethod
    def _header_text(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Never echo the value: if someone pasted a key here it must not reach a message.
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, _), "
                "not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_base_url(value)

    @model_validator(mode="after")
    def _batch_needs_a_provider(self) -> JudgeConfig:
        # a panel's batch: true is refused by _check_panel, whatever its kind
        if self.batch and self.kind == "mock" and not self.panel:
            raise field_error(
                "batch",
                "batch: true (--batch-api) needs an openai_compatible or anthropic judge; "
                "to try it without a key, run cj-run serve-mock and use --judge openai "
                "--judge-base-url http://127.0.0.1:8000/v1",
            )
        return self

    @property
    def price_factor(self) -> float:
        """What share of the profile's prices is paid: ``1 - batch_discount`` in
        batch-API mode, else 1."""
        return 1.0 - self.batch_discount if self.batch else 1.0

    @property
    def effective_base_url(self) -> str | None:
        """``base_url``, or the provider's public URL for a real judge without one."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind)

    @property
    def capabilities(self) -> Capabilities:
        """What requests to this model carry (built-in rules + this profile's overrides)."""
        return resolve_capabilities(
            self.kind,
            self.model,
            structured_output=self.structured_output,
            max_tokens_param=self.max_tokens_param,
            thinking=self.thinking is not None,
        )

    @property
    def effective_max_tokens_ceiling(self) -> int:
        """The token allowance after a truncated answer (at least ``max_tokens``)."""
        return max(self.max_tokens, self.max_tokens_ceiling or 4 * self.max_tokens)

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        """Price of ``tokens_in`` input (``tokens_cached`` of them from the provider's
        prompt cache) and ``tokens_out`` output tokens (profile prices; in batch-API mode
        less the batch discount)."""
        return self.price_factor * self.sync_cost(tokens_in, tokens_out, tokens_cached)

    def sync_cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        """:meth:`cost` at the synchronous price (no batch discount)."""
        return token_cost(
            tokens_in,
            tokens_out,
            tokens_cached,
            price_in=self.price_input_per_mtok,
            price_out=self.price_output_per_mtok,
            price_cached=self.price_cached_input_per_mtok,
        )


DEFAULT_PANEL_DOUBLE_SHARE = 0.1
"""A panel's share of pairs asked of two judges when neither the setting nor the profile
says (docs/panels.md)."""


def panel_double_share(config: JudgeConfig, setting: float | None) -> float:
    """The share of each wave's pairs a batch also asks of a second judge: 0 for one judge;
    for a panel the setting ``PANEL_DOUBLE_SHARE`` when set, else the profile's
    ``double_share``, else :data:`DEFAULT_PANEL_DOUBLE_SHARE`."""
    if not config.panel:
        return 0.0
    if setting is not None:
        return float(setting)
    if config.double_share is not None:
        return float(config.double_share)
    return DEFAULT_PANEL_DOUBLE_SHARE


class PanelMember(_Strict):
    """One judge of a panel and its share of the calls."""

    judge: JudgeConfig
    share: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)


JudgeConfig.model_rebuild()


PANEL_BATCH_REFUSED = (
    "a panel cannot use the provider batch API (batch: true, --batch-api): its calls go to "
    "its judges one at a time at the synchronous price; remove batch: true, or run each "
    "judge as a batch of its own"
)


def field_error(field: str, message: str) -> PydanticCustomError:
    """A model validator's error about one field: :func:`format_validation_error` names
    ``field`` (a dotted path below the model) instead of the model as a whole."""
    return PydanticCustomError("cj_field", "{message}", {"field": field, "message": message})


def _check_panel(config: JudgeConfig) -> JudgeConfig:
    """A panel has two or more judges with distinct names, none a panel itself, and one
    price list (the batch's cost is priced once for all its calls); neither the panel nor
    any of its judges asks for the provider batch API (the executor sends a panel's calls
    one at a time: a member's ``batch: true`` would be ignored and billed at the
    synchronous price)."""
    members = config.panel
    if not members:
        if config.double_share:
            raise ValueError("double_share needs a panel (a judge profile with a 'panel:' list)")
        return config
    if len(members) < 2:
        raise ValueError("a panel needs at least two judges")
    if config.batch:
        raise field_error("batch", PANEL_BATCH_REFUSED)
    for k, member in enumerate(members):
        if member.judge.batch:
            raise field_error(f"panel.{k}.judge.batch", PANEL_BATCH_REFUSED)
    names = [m.judge.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"panel judges need distinct names, got {', '.join(names)}")
    if any(m.judge.panel for m in members):
        raise ValueError("a panel judge cannot be a panel itself")
    prices = {
        (m.judge.price_input_per_mtok, m.judge.price_output_per_mtok,
         m.judge.price_cached_input_per_mtok)
        for m in members
    }  # fmt: skip
    if len(prices) > 1:
        raise ValueError(
            "the judges of a panel must have the same prices (the batch's cost is priced "
            "once for all its calls)"
        )
    return config


def token_cost(
    tokens_in: int,
    tokens_out: int,
    tokens_cached: int = 0,
    *,
    price_in: float,
    price_out: float,
    price_cached: float | None = None,
) -> float:
    """USD for the tokens at per-million prices; cached input tokens at ``price_cached``
    (the input price when ``None``)."""
    cached = min(max(tokens_cached, 0), tokens_in)
    cached_price = price_in if price_cached is None else price_cached
    return (
        (tokens_in - cached) * price_in + cached * cached_price + tokens_out * price_out
    ) / 1_000_000


def format_validation_error(error: ValidationError, what: str) -> str:
    """One line naming every bad field of ``error``, after ``what`` (never the values)."""
    parts = []
    for item in error.errors():
        path = [str(p) for p in item["loc"]]
        if item["type"] == "cj_field":
            path.append(str(item.get("ctx", {}).get("field", "")))
        loc = ".".join(p for p in path if p) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            # item["msg"] never contains the input value (unlike str(error)).
            parts.append(f"field '{loc}': {item['msg']}")
    return f"{what}: " + "; ".join(parts)


def judge_config_from_mapping(
    data: Mapping[str, Any], source: str, *, base_dir: Path | None = None
) -> JudgeConfig:
    """Validate a judge mapping (a judge profile, or a CJ profile's ``judge:`` section).

    Args:
        data: the mapping of :class:`JudgeConfig` fields.
        source: where it came from (a file name), used in error messages.
        base_dir: folder against which a relative ``prompt_template`` is resolved.

    Raises:
        ConfigError: naming ``source`` and every bad field.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid judge profile {source}: expected a mapping of settings")
    data = _resolve_panel(data, source, base_dir)
    try:
        config = JudgeConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"invalid judge profile {source}")) from None
    if config.panel:
        # the panel is priced as its judges are (they share one price list): plans,
        # summaries and exports read the prices of the stored profile
        first = config.panel[0].judge
        config = config.model_copy(
            update={
                "price_input_per_mtok": first.price_input_per_mtok,
                "price_output_per_mtok": first.price_output_per_mtok,
                "price_cached_input_per_mtok": first.price_cached_input_per_mtok,
            }
        )
    if config.prompt_template and base_dir is not None:
        template = Path(config.prompt_template).expanduser()
        if not template.is_absolute():
            template = (base_dir / template).resolve()
        config = config.model_copy(update={"prompt_template": str(template)})
    return config


def _resolve_panel(
    data: Mapping[str, Any], source: str, base_dir: Path | None
) -> Mapping[str, Any]:
    """A panel's members named by judge profile (``judge: mock_default``) are replaced by
    the profile's settings, so what is stored with a batch needs no file to rebuild; a
    member written out in place gets its relative ``prompt_template`` resolved against
    ``base_dir``, as the profile's own."""
    members = data.get("panel")
    if not isinstance(members, list):
        return data
    resolved = []
    for k, member in enumerate(members):
        if isinstance(member, str):
            member = {"judge": member}
        if isinstance(member, Mapping) and isinstance(member.get("judge"), str):
            try:
                loaded = load_judge_profile(member["judge"])
            except ConfigError as exc:
                raise ConfigError(f"invalid judge profile {source}: panel[{k}]: {exc}") from None
            member = {**member, "judge": loaded.model_dump(mode="json")}
        elif isinstance(member, Mapping) and isinstance(member.get("judge"), Mapping):
            template = member["judge"].get("prompt_template")
            if isinstance(template, str) and template and base_dir is not None:
                path = Path(template).expanduser()
                if not path.is_absolute():
                    path = (base_dir / path).resolve()
                member = {**member, "judge": {**member["judge"], "prompt_template": str(path)}}
        resolved.append(member)
    return {**data, "panel": resolved}


def available_judge_profiles() -> list[str]:
    """Names of the judge profiles (YAML files with a top-level ``kind``) on the search path
    of :func:`cj_runner.config.profile_dirs`."""
    return available_profiles("judge")


def load_judge_profile(name_or_path: str) -> JudgeConfig:
    """Load a judge profile by name (``profiles/<name>.yaml`` on the search path) or path.

    Raises:
        ConfigError: the profile does not exist (the message lists the available names),
            is not valid YAML, or has an unknown or out-of-range field.
    """
    try:
        path = resolve_profile_path(name_or_path, "judge")
    except ConfigError:
        available = ", ".join(available_judge_profiles()) or "none"
        raise ConfigError(
            f"unknown judge profile '{name_or_path}' (available judge profiles: {available})"
        ) from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read judge profile {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"judge profile {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if isinstance(data, dict) and "kind" not in data and {"judge", "settings"} & set(data):
        raise ConfigError(
            f"{path} is a CJ profile, not a judge profile (it has no 'kind:'); pass it with "
            f"--profile, or give --judge one of: {', '.join(available_judge_profiles())}"
        )
    return judge_config_from_mapping(data, str(path), base_dir=path.parent)

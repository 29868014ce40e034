"""Build a judge from its profile, and apply the per-run overrides of the command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from cj_runner.errors import ConfigError
from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.base import Judge
from cj_runner.judges.batch_api import BatchAPI
from cj_runner.judges.config import PANEL_BATCH_REFUSED, JudgeConfig, format_validation_error
from cj_runner.judges.mock import MockJudge
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.prompts import PromptTemplate, load_prompt_template
from cj_runner.judges.ratelimit import Limiter

SleepFn = Callable[[float], Awaitable[None]]


def judge_prompt_template(config: JudgeConfig) -> PromptTemplate:
    """The prompt template a judge built from ``config`` uses (its hash is the prompt hash)."""
    return load_prompt_template(Path(config.prompt_template) if config.prompt_template else None)


def resolve_api_key(config: JudgeConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The API key of a real judge, read from the variable ``config.api_key_env``.

    Raises:
        ConfigError: the variable is named but unset or empty (the message names the
            variable, never a value).
    """
    if config.kind == "mock" or not config.api_key_env:
        return None
    source = os.environ if env is None else env
    key = source.get(config.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"judge '{config.name}' needs an API key in the environment variable "
            f"{config.api_key_env}, which is not set"
        )
    if not key.isascii() or not key.isprintable() or any(ch.isspace() for ch in key):
        # an HTTP header cannot carry it; never echo the value
        raise ConfigError(
            f"the API key in {config.api_key_env} contains characters an HTTP header cannot "
            "carry (non-ASCII, spaces or control characters); check that it was pasted whole"
        )
    return key


def build_judge(
    config: JudgeConfig,
    *,
    env: Mapping[str, str] | None = None,
    sleep: SleepFn = asyncio.sleep,
    transport: httpx.AsyncBaseTransport | None = None,
    limiter: Limiter | None = None,
) -> Judge:
    """Build the judge a profile describes.

    Args:
        config: the judge profile.
        env: where API keys are read (default ``os.environ``).
        sleep: used by the mock's latency and the real judges' rate limiter.
        transport: an httpx transport for the real judges (tests).
        limiter: a rate limit to wait on instead of the profile's in-process one (a
            limit shared by several workers); the mock judge has none.

    Raises:
        ConfigError: a missing API key variable or an unreadable prompt template.
    """
    if config.panel:
        from cj_runner.judges.panel import PanelJudge

        # every member's key and template first: a member that cannot be built must not
        # leave the ones before it with open HTTP clients (this function cannot await)
        for member in config.panel:
            judge_prompt_template(member.judge)
            resolve_api_key(member.judge, env)
        members = [
            build_judge(m.judge, env=env, sleep=sleep, transport=transport, limiter=limiter)
            for m in config.panel
        ]
        return PanelJudge(config, members)
    template = judge_prompt_template(config)
    if config.kind == "mock":
        return MockJudge(config, template=template, sleep=sleep)
    api_key = resolve_api_key(config, env)
    judge: OpenAICompatJudge | AnthropicJudge
    if config.kind == "openai_compatible":
        judge = OpenAICompatJudge(
            config, api_key=api_key, template=template, transport=transport, sleep=sleep
        )
    else:
        judge = AnthropicJudge(
            config, api_key=api_key, template=template, transport=transport, sleep=sleep
        )
    if limiter is not None:
        judge.use_limiter(limiter)
    return judge


def build_batch_api(
    judge: Judge, transport: httpx.AsyncBaseTransport | None = None
) -> BatchAPI | None:
    """The provider batch API of ``judge`` when its profile asks for it (``batch: true``);
    ``None`` otherwise."""
    config = getattr(judge, "config", None)
    if not isinstance(config, JudgeConfig) or not config.batch:
        return None
    if isinstance(judge, OpenAICompatJudge):
        from cj_runner.judges.batch_openai import OpenAIBatchAPI

        return OpenAIBatchAPI(judge, transport)
    if isinstance(judge, AnthropicJudge):
        from cj_runner.judges.batch_anthropic import AnthropicBatchAPI

        return AnthropicBatchAPI(judge, transport)
    raise ConfigError(f"judge {judge.name}: batch: true needs an OpenAI or Anthropic judge")


@contextlib.asynccontextmanager
async def open_judge(
    config: JudgeConfig,
    *,
    limiter: Limiter | None = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[tuple[Judge, BatchAPI | None]]:
    """The judge ``config`` describes and its provider batch API (``None`` unless
    ``batch: true``), both closed on the way out: also when the batch API cannot be built
    (a :class:`ConfigError` after the judge's HTTP client was opened) or the body raises.

    Raises:
        ConfigError: as :func:`build_judge` and :func:`build_batch_api`.
    """
    judge = build_judge(config, env=env, transport=transport, limiter=limiter)
    batch_api: BatchAPI | None = None
    try:
        batch_api = build_batch_api(judge, transport)
        yield judge, batch_api
    finally:
        try:
            if batch_api is not None:
                await batch_api.aclose()
        finally:
            await judge.aclose()


def apply_overrides(
    config: JudgeConfig,
    *,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    base_url: str | None = None,
    seed: int | None = None,
    batch: bool | None = None,
) -> JudgeConfig:
    """A copy of ``config`` with the given fields replaced (``None`` keeps the profile's).

    ``seed`` only matters for the mock judge (the run's ``--seed`` may be passed on).

    Raises:
        ConfigError: an override out of range (e.g. a temperature above 2).
    """
    updates: dict[str, Any] = {
        key: value
        for key, value in {
            "model": model,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "base_url": base_url,
            "seed": seed,
            "batch": batch,
        }.items()
        if value is not None
    }
    if not updates:
        return config
    if config.panel and updates.get("batch"):
        raise ConfigError(f"--batch-api: {PANEL_BATCH_REFUSED}")
    if config.panel and set(updates) - {"seed", "batch"}:
        named = ", ".join(f"--judge-{k.replace('_', '-')}" for k in updates if k != "seed")
        raise ConfigError(
            f"{named} cannot be applied to the panel '{config.name}': set them on its judges "
            "in the panel profile"
        )
    try:
        return JudgeConfig.model_validate({**config.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "invalid judge override")) from None

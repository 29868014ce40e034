"""The mock judge: a seeded, network-free judge with a latent truth, noise and position bias.

How it decides one ordered pair (A, B):

* **Latent quality** of each essay, first match wins: the metadata column
  ``latent_column`` (default ``true_score``) parsed as a number; for an anchor, its known
  grade through ``anchor_grade_latent``; else :func:`text_feature_latent`.
* **P(A wins)** = ``1 / (1 + exp(-(la - lb) / noise)) + position_bias``, clipped to
  [0, 1]; ``noise = 0`` makes the better essay always win (a tie is a coin flip).
  ``always: A|B`` forces the winner.
* **Randomness**: every draw of one attempt comes from a generator seeded with a SHA-256
  of ``(seed, checksum A, checksum B, ask index, attempt)``, so the answers do not
  depend on call order or concurrency.
* **Errors**: one uniform draw per attempt against the cumulative error rates, in the
  order timeout, rate_limit, server_error, malformed, refused. A timeout raises after its
  latency; malformed is transient (retried by the caller), refused is fatal.
* **Latency**: ``zero`` never sleeps; ``fixed`` and ``lognormal`` sleep through the
  injected ``sleep``. ``latency_s`` in the verdict is the simulated latency.
* **Tokens**: ``tokens_in`` estimates the rendered prompt, ``tokens_out`` the
  justification; confidence is ``1 + min(4, floor(10 * |P - 0.5|))``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cj_runner.core.models import Winner
from cj_runner.errors import FatalJudgeError, RateLimited, TransientJudgeError
from cj_runner.judges.base import EssayText, JudgeRequest, Verdict, request_key
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.prompts import PromptTemplate, estimate_tokens, render_prompt

SleepFn = Callable[[float], Awaitable[None]]

_WORD = re.compile(r"\w+", re.UNICODE)

#: Error kinds in the order their rates are stacked on the unit interval.
ERROR_ORDER: tuple[str, ...] = ("timeout", "rate_limit", "server_error", "malformed", "refused")


def text_feature_latent(text: str) -> float:
    """A latent quality from simple text features, for essays without a known latent.

    ``ln((words + 1) / 250) / 0.5 + (type/token ratio - 0.55) / 0.15``, clipped to
    [-4, 4]: longer essays with a richer vocabulary score higher. It is a crude,
    deterministic stand-in for a judge's taste, good enough for smoke runs.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    n = len(words)
    ttr = len(set(words)) / n if n else 0.0
    value = math.log((n + 1) / 250.0) / 0.5 + (ttr - 0.55) / 0.15
    return max(-4.0, min(4.0, value))


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def essay_latent(essay: EssayText, config: JudgeConfig) -> float:
    """The mock's latent quality of one essay (see the module docstring for the order)."""
    from_column = _parse_float(essay.metadata.get(config.latent_column))
    if from_column is not None:
        return from_column
    if essay.is_anchor and essay.known_grade is not None and config.anchor_grade_latent:
        by_grade = config.anchor_grade_latent.get(essay.known_grade)
        if by_grade is not None:
            return float(by_grade)
    return text_feature_latent(essay.text)


def p_a_wins(latent_a: float, latent_b: float, config: JudgeConfig) -> float:
    """Probability that A wins under the logistic model plus position bias, in [0, 1]."""
    diff = latent_a - latent_b
    if config.noise == 0:
        base = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    else:
        z = diff / config.noise
        # Numerically safe logistic.
        base = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return max(0.0, min(1.0, base + config.position_bias))


def draw_rng(
    seed: int, checksum_a: str, checksum_b: str, repeat_index: int, attempt: int
) -> random.Random:
    """The generator for one attempt, from a SHA-256 of its identifying fields."""
    key = f"{seed}\x1f{checksum_a}\x1f{checksum_b}\x1f{repeat_index}\x1f{attempt}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True, slots=True)
class MockDecision:
    """What the mock does on one attempt: an error kind, or a winner; and how long it takes."""

    error: str | None
    winner: Winner
    p_a: float
    confidence: int
    latency_s: float
    justification: str


def decide(
    config: JudgeConfig, latent_a: float, latent_b: float, rng: random.Random
) -> MockDecision:
    """Draw one attempt's outcome (shared by :class:`MockJudge` and the mock HTTP server).

    Draw order is fixed (error, winner, latency) so a seed always gives the same result.
    """
    u_error = rng.random()
    u_winner = rng.random()
    z_latency = rng.gauss(0.0, 1.0)

    error: str | None = None
    edge = 0.0
    rates = config.errors
    for kind in ERROR_ORDER:
        edge += float(getattr(rates, kind))
        if u_error < edge:
            error = kind
            break

    p_a = p_a_wins(latent_a, latent_b, config)
    drawn: Winner = "A" if u_winner < p_a else "B"
    winner: Winner = config.always if config.always is not None else drawn
    confidence = 1 + min(4, math.floor(abs(p_a - 0.5) * 10))

    latency = config.latency
    if latency.distribution == "zero":
        latency_s = 0.0
    elif latency.distribution == "fixed":
        latency_s = latency.median_ms / 1000.0
    else:
        latency_s = latency.median_ms / 1000.0 * math.exp(latency.sigma * z_latency)

    other = "B" if winner == "A" else "A"
    justification = (
        f"Essay {winner} is the stronger response overall; essay {other} is less developed "
        f"(mock judge, P(A)={p_a:.2f})."
    )
    return MockDecision(error, winner, p_a, confidence, latency_s, justification)


def raise_for_mock_error(kind: str) -> None:
    """Raise the :mod:`cj_runner.errors` exception a mock error kind stands for."""
    if kind == "timeout":
        raise TransientJudgeError("timeout", "mock judge: simulated timeout")
    if kind == "rate_limit":
        raise RateLimited("mock judge: simulated rate limit (429)")
    if kind == "server_error":
        raise TransientJudgeError("server_error", "mock judge: simulated server error (500)")
    if kind == "malformed":
        raise TransientJudgeError("malformed", "mock judge: simulated malformed answer")
    if kind == "refused":
        raise FatalJudgeError("refused", "mock judge: simulated refusal")
    raise ValueError(f"unknown mock error kind {kind!r}")


def mock_behaviour(config: JudgeConfig) -> dict[str, Any]:
    """Everything that shapes a mock's answers (not its name, prices or latency)."""
    return config.model_dump(
        mode="json",
        exclude={"name", "latency", "price_input_per_mtok", "price_output_per_mtok"},
    )


class MockJudge:
    """A deterministic judge without network, configured by a ``kind: mock`` profile."""

    def __init__(
        self,
        config: JudgeConfig,
        *,
        template: PromptTemplate,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.prompt_hash = template.hash
        self._behaviour = mock_behaviour(config)
        self.price_input_per_mtok = config.price_input_per_mtok
        self.price_output_per_mtok = config.price_output_per_mtok
        self._template = template
        self._sleep = sleep
        #: whether a comparison may need more than one call (error rates above zero); the
        #: executor's budget plans for the worst case of every judge that can fail
        self.retries_possible = config.errors.total > 0

    def cache_key(self, request: JudgeRequest) -> str:
        """The judgment cache key: the mock's whole behaviour, the rendered prompt and the
        repeat index (two mocks share answers only when they would answer alike)."""
        system, user = render_prompt(self._template, request)
        body = {"behaviour": self._behaviour, "system": system, "user": user}
        return request_key("mock:", body, request.repeat_index)

    def latent(self, essay: EssayText) -> float:
        """The latent quality this judge assigns to ``essay``."""
        return essay_latent(essay, self.config)

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Answer one ordered pair, or raise the drawn error."""
        config = self.config
        rng = draw_rng(
            config.seed,
            request.essay_a.checksum,
            request.essay_b.checksum,
            max(request.repeat_index, request.ask_index),
            request.attempt,
        )
        decision = decide(config, self.latent(request.essay_a), self.latent(request.essay_b), rng)
        if decision.latency_s > 0:
            await self._sleep(decision.latency_s)
        if decision.error is not None:
            raise_for_mock_error(decision.error)
        system, user = render_prompt(self._template, request)
        return Verdict(
            winner=decision.winner,
            confidence=decision.confidence,
            justification=decision.justification,
            tokens_in=estimate_tokens(system) + estimate_tokens(user),
            tokens_out=estimate_tokens(decision.justification),
            latency_s=decision.latency_s,
            model=self.model,
            prompt_hash=self.prompt_hash,
        )

    async def aclose(self) -> None:
        """Nothing to release."""

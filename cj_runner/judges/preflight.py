"""Check a judge before any money is spent: the key variable is set, the server answers.

``check_judge`` builds the judge (which fails with the variable's NAME when the key is
missing; the key itself is never printed) and sends one free request, ``GET /models``
(OpenAI-compatible servers) or ``GET /v1/models`` (Anthropic), which no provider bills and
which does not count against a batch's budget. A refused key or an unreachable server is
an error naming the URL and what went wrong; a server that answers but has no model list
(404, 405) is fine. A panel is checked member by member, each as it would be alone (its
lines start with the member's name; the first member that fails stops the check).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cj_runner.errors import UserError
from cj_runner.judges._http import HTTPJudge, error_detail, scrub
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.registry import build_judge

__all__ = ["JudgeCheck", "check_judge", "models_url"]

CHECK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class JudgeCheck:
    """What the check found: ``lines`` to show the user (never a key)."""

    judge: str
    url: str | None
    lines: tuple[str, ...]


def models_url(judge: HTTPJudge) -> str:
    """The free model-list endpoint next to the judge's answer endpoint."""
    url = judge.url.rstrip("/")
    for tail in ("/chat/completions", "/messages"):
        if url.endswith(tail):
            return url[: -len(tail)] + "/models"
    return url.rsplit("/", 1)[0] + "/models"


async def check_judge(
    config: JudgeConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> JudgeCheck:
    """Check ``config``'s key variable and server; raises a one-line UserError if not usable."""
    if config.panel:
        lines: list[str] = []
        for member in config.panel:
            check = await check_judge(member.judge, transport=transport)
            lines.extend(f"{member.judge.name}: {line}" for line in check.lines)
        return JudgeCheck(config.name, None, tuple(lines))
    if config.kind == "mock":
        return JudgeCheck(config.name, None, ())  # the mock: nothing to check, nothing said
    judge = build_judge(config, transport=transport) if transport else build_judge(config)
    try:
        assert isinstance(judge, HTTPJudge)
        url = models_url(judge)
        lines = []
        if config.api_key_env:
            lines.append(f"key: {config.api_key_env} is set")
        try:
            response = await judge._client.get(url, timeout=min(config.timeout_s, CHECK_TIMEOUT_S))
        except httpx.HTTPError as exc:
            text = scrub(str(exc) or type(exc).__name__, judge._secret)
            raise UserError(
                f"judge {config.name}: cannot reach {url} ({type(exc).__name__}: {text}); "
                "check the base URL (--judge-base-url, CJ_JUDGE_BASE_URL or the profile's "
                "base_url) and that the server runs"
            ) from None
        status = response.status_code
        if status in (401, 403):
            detail = scrub(error_detail(response), judge._secret)
            where = f"the key in {config.api_key_env}" if config.api_key_env else "the request"
            raise UserError(f"judge {config.name}: {url} refused {where} (HTTP {status}: {detail})")
        if response.is_success:
            lines.append(f"server: GET {url} answered {status}")
            models = _model_ids(response)
            if models and config.model not in models:
                shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
                lines.append(
                    f"warning: model {config.model!r} is not in the server's list ({shown})"
                )
        else:
            lines.append(
                f"server: GET {url} answered {status}; the server is reachable "
                "(it lists no models there)"
            )
        return JudgeCheck(config.name, url, tuple(lines))
    finally:
        await judge.aclose()


def _model_ids(response: httpx.Response) -> list[str]:
    try:
        data = response.json()
    except ValueError:
        return []
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    return [str(i["id"]) for i in items if isinstance(i, dict) and "id" in i]

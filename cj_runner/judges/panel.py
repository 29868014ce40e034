"""A panel judge: several judges in one batch, each answering its share of the calls.

The executor sees one judge; each request goes to the member it names
(:attr:`JudgeRequest.judge`: the executor plans the judge of every comparison and stores
it, so a pair asked of two judges on purpose goes to both), else to the member
:func:`cj_runner.core.panel_design.panel_member` picks from the essays' checksums, the
repeat index and the panel's seed (never from timing). The member's own cache key is
used, so cached answers stay with the judge that gave them. The reports read the stored
judge, and recompute the seeded choice for comparisons stored without one
(:func:`member_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cj_runner.core.panel_design import panel_member
from cj_runner.judges.base import Judge, JudgeRequest, Verdict, cache_key_of
from cj_runner.judges.config import JudgeConfig


def member_of(config: JudgeConfig, checksum_a: str, checksum_b: str, repeat_index: int) -> str:
    """The name of the panel judge that answers this ordered pair (``config`` a panel)."""
    shares = [m.share for m in config.panel]
    k = panel_member(shares, config.seed, checksum_a, checksum_b, repeat_index)
    return config.panel[k].judge.name


class PanelJudge:
    """Dispatches every request to one member judge (see the module docstring)."""

    def __init__(self, config: JudgeConfig, members: Sequence[Judge]) -> None:
        if len(members) != len(config.panel) or len(members) < 2:
            raise ValueError("a panel judge needs one built judge per panel member")
        self.config = config
        self.members = list(members)
        self.name = config.name
        self.model = "panel:" + "+".join(m.model for m in members)
        self.prompt_hash = hashlib.sha256(
            "\x1f".join(m.prompt_hash for m in members).encode()
        ).hexdigest()
        first = config.panel[0].judge
        self.price_input_per_mtok = first.price_input_per_mtok
        self.price_output_per_mtok = first.price_output_per_mtok
        self.price_cached_input_per_mtok = first.price_cached_input_per_mtok
        self._shares = [m.share for m in config.panel]
        self._by_name = {m.judge.name: k for k, m in enumerate(config.panel)}

    def member(self, request: JudgeRequest) -> Judge:
        """The member that answers ``request`` (the one it names, else the seeded choice)."""
        if request.judge is not None:
            k = self._by_name.get(request.judge)
            if k is None:
                raise ValueError(f"judge {request.judge!r} is not a member of this panel")
            return self.members[k]
        k = panel_member(
            self._shares,
            self.config.seed,
            request.essay_a.checksum,
            request.essay_b.checksum,
            request.repeat_index,
        )
        return self.members[k]

    def cache_key(self, request: JudgeRequest) -> str:
        """The answering member's cache key."""
        return cache_key_of(self.member(request), request)

    async def judge(self, request: JudgeRequest) -> Verdict:
        """Ask the member whose turn it is."""
        return await self.member(request).judge(request)

    async def aclose(self) -> None:
        """Close every member."""
        for member in self.members:
            await member.aclose()

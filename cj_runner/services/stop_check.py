"""What the ``TARGET_RELIABILITY`` stop checked, stored with the batch and shown beside
its stop reason (``stop_check`` in the state's ``extra_json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STOP_CHECK_KEY = "stop_check"
"""The key in the state's ``extra_json``: the robust reliability, its posterior SD, ``z``,
the lower bound, the target and the comparisons at the wave that stopped the batch."""


def stop_detail(check: Mapping[str, Any] | None) -> str | None:
    """One line saying what the ``TARGET_RELIABILITY`` stop checked, e.g. "robust
    reliability 0.861 ± 0.034 at 612 comparisons: its lower bound (estimate − 1.645 SD)
    0.805 reached the target 0.800"; ``None`` without a check."""
    if not check:
        return None
    value, sd = check.get("robust_reliability"), check.get("posterior_sd")
    bound, target = check.get("lower_bound"), check.get("target")
    if value is None or bound is None or target is None:
        return None
    spread = f" ± {sd:.3f}" if sd is not None else ""
    z = float(check.get("z") or 0.0)
    rule = (
        f"its lower bound (estimate − {z:g} SD) {bound:.3f}" if z else f"the estimate {bound:.3f}"
    )
    at = f" at {int(check['comparisons'])} comparisons" if check.get("comparisons") else ""
    return f"robust reliability {value:.3f}{spread}{at}: {rule} reached the target {target:.3f}"

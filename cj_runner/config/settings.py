"""The settings model: every setting's type, default, range and meaning (spec §3).

Field order is the documented order (docs/settings.md, ``setting_names``); the continuation
decision's limits are read from a ``Settings`` by :func:`continuation_limits`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:
    from cj_runner.core.continuation import ContinuationLimits

MatchingStrategy = Literal["balanced", "random", "swiss", "infogain", "grade_boundary"]
Source = Literal["default", "profile", "env", "flag"]

_SEED_LIMIT = 2**63  # the seed is stored in a signed 64-bit database column


class Settings(BaseModel, frozen=True, extra="forbid"):
    """The effective settings of a batch; field names are the setting names (spec §3)."""

    MAX_PAIRWISE_COMPARISONS: int = Field(
        300, gt=0, description="Default total budget of a batch: judge calls it may send."
    )
    COMPARISONS_PER_STABILITY_CHECK_ITERATION: int = Field(
        12, ge=1, description="Most comparisons in one wave."
    )
    MIN_COMPARISONS_FOR_STABILITY_CHECK: int = Field(
        12, ge=0, description="No stability stop before this many successful results."
    )
    SCORE_STABILITY_THRESHOLD: float = Field(
        0.05,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Stable when the largest change of any node's BT score between two successive "
            "waves is below this; 0 switches the stability stop off."
        ),
    )
    MAX_ITERATIONS: int = Field(50, ge=1, description="Most waves in a batch.")
    MIN_RESAMPLING_NET_SIZE: int = Field(
        10,
        ge=0,
        description="A batch with at most this many student essays is a small net.",
    )
    MAX_RESAMPLING_PASSES_FOR_SMALL_NET: int = Field(
        2, ge=0, description="Resampling passes allowed for a small net."
    )
    MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH: int = Field(
        1, ge=0, description="Resampling passes allowed for other batches."
    )
    MIN_SUCCESS_RATE: float = Field(
        0.8,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Below this share of successful comparisons the batch finalizes as failed.",
    )
    MAX_CONCURRENT_REQUESTS: int = Field(
        8, ge=1, le=1024, description="Judge calls in flight at once."
    )
    MAX_ATTEMPTS_PER_COMPARISON: int = Field(
        3,
        ge=1,
        le=20,
        description=(
            "Attempts of one comparison (first call plus retries of transient errors); "
            "every attempt counts against the budget."
        ),
    )
    RETRY_BASE_DELAY_S: float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="Base delay in seconds of the exponential backoff between attempts.",
    )
    RETRY_MAX_DELAY_S: float = Field(
        30.0,
        ge=0,
        allow_inf_nan=False,
        description="Longest delay in seconds between attempts (at least RETRY_BASE_DELAY_S).",
    )
    MATCHING_STRATEGY: MatchingStrategy = Field(
        "infogain",
        description=(
            "How pairs are chosen inside coverage and resampling mode: `balanced` (fewest "
            "comparisons, then close scores), `random`, `swiss` (nearest score among the "
            "least compared), `infogain` (largest expected information gain), "
            "`grade_boundary` (where projected grades are least certain)."
        ),
    )
    AUDIT_SHARE: float = Field(
        0.0,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description=(
            "Share of calls spent on uniformly random audit pairs for the design-robust "
            "reliability estimate."
        ),
    )
    MISFIT_CHECK_SHARE: float = Field(
        0.25,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description=(
            "Share of calls spent on check pairs: an essay whose misfit is least settled "
            "against one from the far end of the ranking, so that an essay the judge "
            "answers at random is flagged (84-93% of batches at 20 comparisons per "
            "essay, against 53-77% with 0; docs/statistics.md, 'Check pairs'). None are "
            "asked when the budget reaches every pair."
        ),
    )
    ANCHOR_WEIGHT: float = Field(
        1.0,
        ge=1,
        le=10,
        allow_inf_nan=False,
        description=(
            "Selection weight of the anchors: under `random` an anchor is drawn about this "
            "many times as often as a student; `infogain` and `grade_boundary` weight its "
            "uncertainty by it (1 = anchors chosen like students). Narrows the grade "
            "boundaries at the cost of the students' own comparisons."
        ),
    )
    PANEL_DOUBLE_SHARE: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description=(
            "Panels: share of each wave's pairs also asked of a second judge (both answers "
            "count), so every two judges share pairs for Cohen's kappa; none = the panel "
            "profile's `double_share`, else 0.1. No effect with one judge."
        ),
    )
    TARGET_RELIABILITY: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description=(
            "Stop once the robust reliability's one-sided 95% lower bound (estimate - 1.645"
            " posterior SD) reaches this; none = off."
        ),
    )
    TARGET_MAX_SE: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Stop once every student's score SE is at most this; none = off.",
    )
    MAX_COST_USD: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Money budget in US dollars next to the call budget; none = off.",
    )
    BT_PRIOR_PRECISION: float = Field(
        0.01,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Ridge (Gaussian prior) precision of the Bradley-Terry fit; keeps scores finite "
            "for unbeaten or disconnected nodes (0 is refused: the fit would diverge)."
        ),
    )
    FIT_ORDER_EFFECT: bool = Field(
        True, description="Estimate the position-A logit shift in the final fit."
    )
    USE_ANCHORS: bool = Field(
        True, description="Include the assignment's anchors in the batch and project grades."
    )
    SEED: int | None = Field(
        None,
        ge=0,
        lt=_SEED_LIMIT,
        description="Batch seed; none = a random seed is drawn and stored with the batch.",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> Settings:
        if self.RETRY_MAX_DELAY_S < self.RETRY_BASE_DELAY_S:
            raise ValueError(
                f"RETRY_MAX_DELAY_S={self.RETRY_MAX_DELAY_S:g} must be >= "
                f"RETRY_BASE_DELAY_S={self.RETRY_BASE_DELAY_S:g}"
            )
        return self


def setting_names() -> list[str]:
    """All setting names, in declaration order."""
    return list(Settings.model_fields)


def continuation_limits(settings: Settings) -> ContinuationLimits:
    """The continuation decision's limits (spec §5) taken from ``settings``."""
    from cj_runner.core.continuation import ContinuationLimits

    return ContinuationLimits(
        min_success_rate=settings.MIN_SUCCESS_RATE,
        min_comparisons_for_stability_check=settings.MIN_COMPARISONS_FOR_STABILITY_CHECK,
        score_stability_threshold=settings.SCORE_STABILITY_THRESHOLD,
        max_iterations=settings.MAX_ITERATIONS,
        max_passes_small_net=settings.MAX_RESAMPLING_PASSES_FOR_SMALL_NET,
        max_passes_regular=settings.MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH,
        target_reliability=settings.TARGET_RELIABILITY,
        target_max_se=settings.TARGET_MAX_SE,
        max_cost_usd=settings.MAX_COST_USD,
    )

"""Grade projection: calibration, boundaries, probabilities, deferral, simulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cj_runner.core.bt import fit_bt
from cj_runner.core.models import GradeScale
from cj_runner.core.projection import (
    DEFERRED_NO_ORDER,
    DEFERRED_NOT_CONNECTED,
    DEFERRED_TOO_FEW_GRADES,
    calibrate,
    grade_probabilities,
    project_grades,
)

SIX = GradeScale("six", ("F", "E", "D", "C", "B", "A"))
FIVE = GradeScale("five", ("E", "D", "C", "B", "A"))


def boundaries_of(scores: list[float], grades: list[int], k: int) -> NDArray[np.float64]:
    result = calibrate(scores, grades, k)
    assert result is not None
    return result[1]


# -------------------------------------------------------------------------- calibration


def test_one_anchor_per_grade_gives_midpoints() -> None:
    cuts = boundaries_of([-2.0, -1.0, 0.5, 1.0, 3.0], [0, 1, 2, 3, 4], 5)
    np.testing.assert_allclose(cuts, [-1.5, -0.25, 0.75, 2.0])


def test_several_anchors_per_grade_use_the_nearest_of_each_grade() -> None:
    # grade 0 anchors at -3 and -1, grade 1 anchors at 0 and 2 -> boundary at -0.5
    cuts = boundaries_of([-3.0, -1.0, 0.0, 2.0], [0, 0, 1, 1], 2)
    np.testing.assert_allclose(cuts, [-0.5])


def test_missing_grades_are_extrapolated_at_the_mean_spacing() -> None:
    # anchors for grades 1..3 of five, spaced 2 apart: spacing 2 per grade
    cuts = boundaries_of([-2.0, 0.0, 2.0], [1, 2, 3], 5)
    np.testing.assert_allclose(cuts, [-3.0, -1.0, 1.0, 3.0])
    # a grade missing in the middle is interpolated: grades 0 and 2 at 0 and 4
    cuts = boundaries_of([0.0, 4.0], [0, 2], 3)
    np.testing.assert_allclose(cuts, [1.0, 3.0])


def test_discordant_anchors_are_pooled_and_the_boundary_sits_in_the_middle() -> None:
    # grade 2 anchor scored below a grade 1 anchor: both pooled at index 1.5
    fitted_cuts = calibrate([0.0, 1.0, 2.0, 3.0], [0, 2, 1, 3], 4)
    assert fitted_cuts is not None
    fitted, cuts = fitted_cuts
    np.testing.assert_allclose(fitted, [0.0, 1.5, 1.5, 3.0])
    # index 1.5 is reached on the flat stretch [1, 2]: its middle; 0.5 and 2.5 are
    # interpolated on the segments from (0, 0) to (1, 1.5) and from (2, 1.5) to (3, 3)
    np.testing.assert_allclose(cuts, [1 / 3, 1.5, 2 + 2 / 3])


def test_boundaries_are_non_decreasing_for_any_anchors() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 8))
        m = int(rng.integers(2, 10))
        grades = rng.integers(0, k, m)
        if len(set(grades.tolist())) < 2:
            continue
        result = calibrate(rng.normal(0, 2, m), grades, k)
        if result is not None:
            assert np.all(np.diff(result[1]) >= -1e-12)


def test_flat_fit_or_too_few_anchors_return_none() -> None:
    assert calibrate([0.0, 1.0], [1, 0], 2) is None
    assert calibrate([0.5], [1], 2) is None
    assert calibrate([], [], 2) is None


# ------------------------------------------------------------------------ probabilities


def test_probabilities_follow_the_normal_bands() -> None:
    probs = grade_probabilities([0.0], [1.0], [-1.0, 1.0], [1, 1, 1])
    np.testing.assert_allclose(probs[0], [0.158655, 0.682689, 0.158655], atol=1e-6)


def test_priors_reweight_and_zero_prior_excludes_a_grade() -> None:
    flat = grade_probabilities([0.0], [1.0], [-1.0, 1.0], [1, 1, 1])[0]
    weighted = grade_probabilities([0.0], [1.0], [-1.0, 1.0], [0.0, 1.0, 3.0])[0]
    assert weighted[0] == 0.0
    expected = flat * np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(weighted, expected / expected.sum())


def test_far_away_scores_do_not_lose_their_probability() -> None:
    probs = grade_probabilities([60.0, -60.0], [0.1, 0.1], [0.0], [1, 1])
    np.testing.assert_allclose(probs, [[0.0, 1.0], [1.0, 0.0]])
    # the only allowed grade is far from the score: it takes everything
    probs = grade_probabilities([60.0], [0.1], [0.0], [1, 0])
    np.testing.assert_allclose(probs, [[1.0, 0.0]])


@settings(deadline=None, max_examples=100)
@given(
    cuts=st.lists(st.floats(-5, 5), min_size=1, max_size=6).map(sorted),
    se=st.floats(0.05, 3.0),
    priors=st.lists(st.floats(0.01, 1.0), min_size=7, max_size=7),
    low=st.floats(-8, 8),
    step=st.floats(0.001, 4),
)
def test_probabilities_sum_to_one_and_are_monotone_in_the_score(
    cuts: list[float], se: float, priors: list[float], low: float, step: float
) -> None:
    k = len(cuts) + 1
    scores = np.array([low, low + step])
    probs = grade_probabilities(scores, [se, se], cuts, priors[:k])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(probs >= 0)
    # a higher score never makes "this grade or above" less likely (stochastic order)
    at_least = probs[:, ::-1].cumsum(axis=1)[:, ::-1]
    assert np.all(at_least[1] >= at_least[0] - 1e-9)
    index = np.arange(k)
    assert probs[1] @ index >= probs[0] @ index - 1e-9


# ------------------------------------------------------------------------ project_grades


def test_projection_end_to_end() -> None:
    scores = np.array([-2.5, 0.1, 2.9, -2.0, 0.0, 2.0])
    se = np.full(6, 0.3)
    result = project_grades(scores, se, [3, 4, 5], ["E", "C", "A"], [0, 1, 2], FIVE)
    assert result.deferred_reason is None
    assert list(result.boundaries) == ["E|D", "D|C", "C|B", "B|A"]
    np.testing.assert_allclose(list(result.boundaries.values()), [-1.5, -0.5, 0.5, 1.5])
    assert [s.grade for s in result.students] == ["E", "C", "A"]
    assert [s.node for s in result.students] == [0, 1, 2]
    middle = result.students[1]
    assert middle.confidence == max(middle.probabilities.values())
    assert sum(middle.probabilities.values()) == pytest.approx(1.0)
    assert middle.expected_index == pytest.approx(2.0 + 0.0, abs=0.2)
    assert [a.fitted_index for a in result.anchors] == [0.0, 2.0, 4.0]
    assert result.warnings == []


def test_deferred_with_fewer_than_two_anchor_grades() -> None:
    scores, se = np.zeros(4), np.ones(4)
    for nodes, grades in (([], []), ([2, 3], ["C", "C"])):
        result = project_grades(scores, se, nodes, grades, [0, 1], FIVE)
        assert result.deferred_reason == DEFERRED_TOO_FEW_GRADES
        assert result.boundaries == {} and result.students == []


def test_deferred_when_anchors_are_not_connected() -> None:
    result = project_grades(
        np.zeros(4), np.ones(4), [2, 3], ["E", "A"], [0, 1], FIVE, connected=False
    )
    assert result.deferred_reason == DEFERRED_NOT_CONNECTED
    assert result.students == []


def test_reversed_anchors_defer_and_warn() -> None:
    scores = np.array([0.0, 1.0, -1.0])
    result = project_grades(scores, np.full(3, 0.2), [1, 2], ["E", "A"], [0], FIVE)
    assert result.deferred_reason == DEFERRED_NO_ORDER
    assert len(result.warnings) == 1
    assert "anchor node 1 (grade E" in result.warnings[0]
    assert "anchor node 2 (grade A" in result.warnings[0]
    named = project_grades(
        scores, np.full(3, 0.2), [1, 2], ["E", "A"], [0], FIVE, labels=["s", "a-E", "a-A"]
    )
    assert "anchor a-E (grade E" in named.warnings[0]
    assert "anchor a-A (grade A" in named.warnings[0]


def test_anchor_health_flags_contradicting_anchors_only() -> None:
    scores = np.array([0.0, -2.0, 0.7, 0.2, 2.0])
    se = np.full(5, 0.25)
    # anchor 2 (grade D) scored above anchor 3 (grade C)
    result = project_grades(scores, se, [1, 2, 3, 4], ["E", "D", "C", "B"], [0], FIVE)
    assert result.deferred_reason is None
    assert len(result.warnings) == 1
    assert (
        "anchor node 2 (grade D, score 0.70) scored above anchor node 3 (grade C"
        in (result.warnings[0])
    )
    assert "1.4 standard errors" in result.warnings[0]
    fitted = {a.node: a.fitted_index for a in result.anchors}
    assert fitted[2] == fitted[3] == pytest.approx(1.5)


@pytest.mark.parametrize(("gap", "warned"), [(0.0, False), (0.35, False), (0.36, True)])
def test_anchor_warnings_need_one_combined_standard_error(gap: float, warned: bool) -> None:
    # combined SE of two anchors with SE 0.25 each: 0.354
    scores = np.array([0.0, -2.0, 0.2 + gap, 0.2, 2.0])
    se = np.full(5, 0.25)
    result = project_grades(scores, se, [1, 2, 3, 4], ["E", "D", "C", "B"], [0], FIVE)
    assert bool(result.warnings) == warned
    assert all("0.0 standard errors" not in w for w in result.warnings)


def test_scale_priors_are_used() -> None:
    scale = GradeScale("two", ("fail", "pass"), priors=(0.9, 0.1))
    scores = np.array([0.0, -1.0, 1.0])
    uniform = GradeScale("two", ("fail", "pass"))
    flat = project_grades(scores, np.ones(3), [1, 2], ["fail", "pass"], [0], uniform)
    skewed = project_grades(scores, np.ones(3), [1, 2], ["fail", "pass"], [0], scale)
    assert flat.students[0].probabilities["fail"] == pytest.approx(0.5)
    assert skewed.students[0].probabilities["fail"] == pytest.approx(0.9)
    assert skewed.students[0].grade == "fail"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"anchor_grades": ["E", "Z"]}, "not on the grade scale"),
        ({"anchor_nodes": [1]}, "same length"),
        ({"student_nodes": [0, 9]}, "outside"),
        ({"student_nodes": [0, 1]}, "both an anchor and a student"),
        ({"scale": GradeScale("five", FIVE.grades, priors=(1, 1))}, "priors"),
        ({"scale": GradeScale("five", FIVE.grades, priors=(0, 0, 0, 0, 0))}, "zero"),
    ],
)
def test_invalid_input_is_refused(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "scores": np.zeros(3),
        "se": np.ones(3),
        "anchor_nodes": [1, 2],
        "anchor_grades": ["E", "A"],
        "student_nodes": [0],
        "scale": FIVE,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        project_grades(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- simulation


def simulate_batch(seed: int, width: float = 3.0, per_node: int = 12) -> tuple[float, float]:
    """Six anchors (one per grade) and 60 students with known latent grades.

    Grade ``k`` covers latent scores ``[k w, (k + 1) w)``; anchors sit at band centres and
    students are typical essays of their grade (band centre plus normal noise of sd ``w/4``,
    kept inside the band). A BT judge (logistic noise) compares pairs in rounds: two
    random rounds, then neighbours in the current ranking, as adaptive CJ does. Returns the
    exact and within-one-grade agreement of the projected grades.
    """
    rng = np.random.default_rng(seed)
    k, students = 6, 60
    true_grade = np.repeat(np.arange(k), students // k)
    offset = np.clip(0.5 + rng.normal(0, 0.25, students), 0.0, 0.999)
    latent = np.concatenate([(true_grade + offset) * width, (np.arange(k) + 0.5) * width])
    n = latent.size
    a = np.zeros(0, dtype=np.intp)
    b = np.zeros(0, dtype=np.intp)
    won = np.zeros(0, dtype=bool)
    for round_ in range(per_node):
        if round_ < 2:
            order = rng.permutation(n)
        else:
            order = np.argsort(fit_bt(n, a, b, won, compute_se=False).scores)
        gap = 1 + round_ % 3 if round_ >= 2 else 1
        x = order[: n - gap : 2]
        y = order[gap::2][: x.size]
        a, b = np.concatenate([a, x]), np.concatenate([b, y])
        p = 1.0 / (1.0 + np.exp(-(latent[x] - latent[y])))
        won = np.concatenate([won, rng.random(x.size) < p])
    fit = fit_bt(n, a, b, won)
    assert fit.se is not None
    result = project_grades(
        fit.scores,
        fit.se,
        list(range(students, n)),
        list(SIX.grades),
        list(range(students)),
        SIX,
    )
    assert result.deferred_reason is None
    projected = np.array([SIX.index(s.grade) for s in result.students])
    for s in result.students:
        assert sum(s.probabilities.values()) == pytest.approx(1.0)
    # the expected grade index follows the score (SEs differ, so not strictly)
    expected = np.array([s.expected_index for s in result.students])
    assert np.corrcoef(expected, fit.scores[:students])[0, 1] > 0.95
    return float(np.mean(projected == true_grade)), float(
        np.mean(np.abs(projected - true_grade) <= 1)
    )


def test_simulated_batches_recover_the_grades() -> None:
    results = np.array([simulate_batch(seed) for seed in range(10)])
    assert results[:, 0].mean() >= 0.70
    assert results[:, 1].min() >= 0.95

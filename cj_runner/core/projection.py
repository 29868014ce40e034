"""Grade projection: anchors with known grades calibrate the Bradley-Terry scale (spec §8).

1. **Calibration.** Anchor grade indices (0 = lowest grade) are fitted as a non-decreasing
   function of anchor score by isotonic regression (pool-adjacent-violators; Barlow et al.
   1972, ``scipy.optimize.isotonic_regression``). Between anchors the fitted index is
   interpolated linearly, so it is a continuous, non-decreasing curve ``f(score)``.
2. **Boundaries.** The boundary between grade ``k`` and ``k + 1`` is the score where ``f``
   reaches ``k + 0.5`` (the middle of a flat stretch if ``f`` equals ``k + 0.5`` on one). With
   one anchor per grade it is the midpoint between the two anchors' scores. Outside the range
   of the anchors (grades above the best or below the worst anchor) boundaries continue at the
   mean spacing of the calibration: ``(max anchor score - min anchor score) / (f_max - f_min)``
   score units per grade.
3. **Probabilities.** A student with score ``s`` and standard error ``se`` has
   ``P_k = Phi((b_k - s) / se) - Phi((b_{k-1} - s) / se)`` of lying in grade ``k``'s band
   (``b_{-1} = -inf``, ``b_{K-1} = +inf``); these are multiplied by the scale's prior
   probabilities (uniform when none are given) and normalised. The projected grade is the
   most probable one, its probability the confidence, and ``sum_k k * P_k`` the expected
   grade index. This is the rule when only the students' SEs are known.
3a. **Joint uncertainty** (spec §8; used by the batch scoring, :func:`joint_grade_probabilities`).
   Given the joint posterior ``N(m, Sigma)`` of all scores, anchors' draws
   ``x_a ~ N(m_a, Sigma_aa)`` restricted to the order of their known grades (every anchor of
   a lower grade below every anchor of a higher one; :mod:`cj_runner.core.grade_draws`;
   seeded, :data:`DEFAULT_DRAWS` of them) each give their own isotonic fit and
   boundaries; each student's score given that draw is normal with the conditional mean
   ``m_s + Sigma_sa Sigma_aa^-1 (x_a - m_a)`` and variance
   ``Sigma_ss - Sigma_sa Sigma_aa^-1 Sigma_as``, whose band probabilities (rule 3) are
   averaged over the draws (a Rao-Blackwellised Monte Carlo: smooth in the scores and
   deterministic for a seed). So the probabilities carry the uncertainty of the anchors'
   scores, of the fit through them and of the student's own score, with their correlations.
   This is the posterior of a model in which anchors are essays like the students whose
   known grades agree with the order of their true qualities; the stated confidence is
   calibrated on average over such anchors, not for every fixed placement of them
   (docs/statistics.md, "Anchor draws in grade order").
   A vector of variances stands for a diagonal ``Sigma`` (independent scores: large batches
   have no covariance), read without forming the ``n x n`` matrix.
4. **Anchor health.** Two anchors are discordant when the one with the lower known grade has
   the higher score by at least :data:`ANCHOR_WARNING_MIN_SE` combined standard errors
   (``(x_low - x_high) / sqrt(se_low^2 + se_high^2)``); each discordant pair is reported as a
   warning. Smaller reversals are within the noise of the scores and are not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
from numpy.typing import ArrayLike, NDArray

from cj_runner.core.grade_draws import ordered_anchor_draws
from cj_runner.core.models import GradeScale

FloatArray = NDArray[np.float64]

DEFERRED_TOO_FEW_GRADES = "fewer than two distinct anchor grades"
DEFERRED_NOT_CONNECTED = "anchors not connected to the students"
DEFERRED_NO_ORDER = "anchor scores do not increase with their grades (the isotonic fit is flat)"

ANCHOR_WARNING_MIN_SE: float = 1.0
"""Smallest reversal of two anchors' scores, in combined standard errors, that is warned
about (a reversal of 0.0 standard errors says nothing)."""

_MAX_WARNINGS = 20
_MIN_SE = 1e-12

DEFAULT_DRAWS = 1000
"""Anchor draws of the joint Monte Carlo (rule 3a); its error is below 0.01 per probability."""


@dataclass(frozen=True)
class StudentProjection:
    """Projected grade of one student node."""

    node: int
    grade: str
    confidence: float
    probabilities: dict[str, float]
    expected_index: float


@dataclass(frozen=True)
class AnchorCalibration:
    """An anchor's known grade, its score and its grade index on the isotonic fit."""

    node: int
    grade: str
    score: float
    fitted_index: float


@dataclass(frozen=True)
class ProjectionResult:
    """Outcome of :func:`project_grades`.

    ``deferred_reason`` is ``None`` when grades were projected; otherwise it says why not, and
    ``boundaries`` and ``students`` are empty. ``boundaries`` maps ``"lower|upper"`` grade
    names to the score between them, lowest first.
    """

    deferred_reason: str | None
    boundaries: dict[str, float]
    students: list[StudentProjection]
    anchors: list[AnchorCalibration]
    warnings: list[str]


def _priors(scale: GradeScale) -> FloatArray:
    k = len(scale.grades)
    if scale.priors is None:
        return np.full(k, 1.0 / k)
    priors = np.asarray(scale.priors, dtype=np.float64)
    if priors.shape != (k,) or not np.all(np.isfinite(priors)) or np.any(priors < 0):
        raise ValueError(f"grade scale {scale.name!r}: priors must be one value >= 0 per grade")
    total = float(priors.sum())
    if total <= 0:
        raise ValueError(f"grade scale {scale.name!r}: priors must not all be zero")
    return np.asarray(priors / total, dtype=np.float64)


def calibrate(
    anchor_scores: ArrayLike, anchor_indices: ArrayLike, n_grades: int
) -> tuple[FloatArray, FloatArray] | None:
    """Isotonic calibration of grade index on score, and the grade boundaries.

    Args:
        anchor_scores: anchor scores.
        anchor_indices: their known grade indices (0 = lowest).
        n_grades: number of grades on the scale.

    Returns:
        ``(fitted, boundaries)``: the isotonic fitted index of each anchor (input order) and
        the ``n_grades - 1`` boundary scores, lowest first (rule in the module docstring);
        ``None`` when the fit is flat (no increase of grade with score, or fewer than two
        anchors).
    """
    x_in = np.asarray(anchor_scores, dtype=np.float64)
    g_in = np.asarray(anchor_indices, dtype=np.float64)
    if x_in.ndim != 1 or x_in.shape != g_in.shape:
        raise ValueError("anchor_scores and anchor_indices must be vectors of the same length")
    if x_in.size < 2:
        return None
    order = np.lexsort((g_in, x_in))  # by score; ties by grade, so ties never contradict
    x = x_in[order]
    f = np.asarray(scipy.optimize.isotonic_regression(g_in[order]).x, dtype=np.float64)
    fitted = np.empty_like(f)
    fitted[order] = f
    if f[-1] <= f[0]:
        return None
    spacing = (x[-1] - x[0]) / (f[-1] - f[0])
    boundaries = np.empty(n_grades - 1)
    for k in range(n_grades - 1):
        t = k + 0.5
        if t < f[0]:
            boundaries[k] = x[0] - (f[0] - t) * spacing
            continue
        if t > f[-1]:
            boundaries[k] = x[-1] + (t - f[-1]) * spacing
            continue
        j = int(np.searchsorted(f, t, side="left"))  # first f >= t
        low = x[j] if f[j] == t else _interpolate(x, f, j - 1, t)
        j = int(np.searchsorted(f, t, side="right")) - 1  # last f <= t
        high = x[j] if f[j] == t else _interpolate(x, f, j, t)
        boundaries[k] = 0.5 * (low + high)
    return fitted, boundaries


def _interpolate(x: FloatArray, f: FloatArray, j: int, t: float) -> float:
    """Score where the segment from point ``j`` to ``j + 1`` reaches ``t``."""
    return float(x[j] + (t - f[j]) / (f[j + 1] - f[j]) * (x[j + 1] - x[j]))


def grade_probabilities(
    scores: ArrayLike, se: ArrayLike, boundaries: ArrayLike, priors: ArrayLike
) -> FloatArray:
    """Probability of each grade for each student (rule 3 of the module docstring).

    Args:
        scores: student scores.
        se: their standard errors (0 means known exactly).
        boundaries: the ``K - 1`` boundary scores, non-decreasing.
        priors: ``K`` prior grade probabilities (need not be normalised).

    Returns:
        An array of shape ``(len(scores), K)`` whose rows sum to 1.
    """
    mu = np.asarray(scores, dtype=np.float64)[:, None]
    sigma = np.maximum(np.asarray(se, dtype=np.float64), _MIN_SE)[:, None]
    cuts = np.asarray(boundaries, dtype=np.float64)
    prior = np.asarray(priors, dtype=np.float64)
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    z = (edges[None, :] - mu) / sigma
    lower, upper = z[:, :-1], z[:, 1:]
    # Differences of upper-tail probabilities keep precision for bands far above the score.
    upper_tail = lower > 0
    band = np.where(
        upper_tail,
        scipy.special.ndtr(-lower) - scipy.special.ndtr(-upper),
        scipy.special.ndtr(upper) - scipy.special.ndtr(lower),
    )
    weighted = np.maximum(band, 0.0) * prior[None, :]
    total = weighted.sum(axis=1, keepdims=True)
    lost = total[:, 0] <= 0  # every allowed band underflowed: take the nearest allowed one
    if np.any(lost):
        distance = np.maximum(edges[None, :-1] - mu, 0.0) + np.maximum(mu - edges[None, 1:], 0.0)
        distance = np.where(prior[None, :] > 0, distance, np.inf)
        nearest = np.argmin(distance[lost], axis=1)
        weighted[lost] = 0.0
        weighted[np.flatnonzero(lost), nearest] = 1.0
        total[lost] = 1.0
    return np.asarray(weighted / total, dtype=np.float64)


def drawn_boundaries(
    anchor_mean: ArrayLike,
    anchor_covariance: ArrayLike,
    anchor_indices: ArrayLike,
    n_grades: int,
    rng: np.random.Generator,
    draws: int = DEFAULT_DRAWS,
    *,
    grade_order: bool = True,
) -> tuple[FloatArray, FloatArray] | None:
    """The anchor draws of rule 3a and each draw's own boundaries (module docstring).

    Args:
        anchor_mean: the anchors' posterior mean scores.
        anchor_covariance: their posterior covariance.
        anchor_indices: their known grade indices.
        n_grades: grades on the scale.
        rng: the random generator of the draws.
        draws: anchor draws.
        grade_order: draw the anchors restricted to the order of their grades (the rule);
            ``False`` draws them unrestricted (the rule before, kept for the benchmarks).

    Returns:
        ``(x, b)``: the draws whose isotonic fit increases (``x`` of shape
        ``(n_anchors, used)``) and their boundaries (``b`` of shape ``(used, n_grades - 1)``,
        each row non-decreasing); ``None`` when no draw's fit increases.
    """
    m_a = np.asarray(anchor_mean, dtype=np.float64)
    s_aa = np.asarray(anchor_covariance, dtype=np.float64)
    idx = np.asarray(anchor_indices, dtype=np.float64)
    if grade_order and np.unique(idx).size > 1:
        x = ordered_anchor_draws(m_a, s_aa, idx, rng, max(1, draws))
    else:
        values, vectors = np.linalg.eigh(s_aa)
        root = vectors * np.sqrt(np.maximum(values, 0.0))
        x = m_a[:, None] + root @ rng.standard_normal((m_a.size, max(1, draws)))
    kept: list[int] = []
    cuts: list[FloatArray] = []
    for d in range(x.shape[1]):
        calibration = calibrate(x[:, d], idx, n_grades)
        if calibration is not None:
            kept.append(d)
            cuts.append(calibration[1])
    if not kept:
        return None
    return np.asarray(x[:, kept]), np.array(cuts, dtype=np.float64)


def joint_grade_probabilities(
    mean: ArrayLike,
    covariance: ArrayLike,
    anchor_nodes: Sequence[int],
    anchor_indices: ArrayLike,
    student_nodes: Sequence[int],
    n_grades: int,
    priors: ArrayLike,
    rng: np.random.Generator,
    draws: int = DEFAULT_DRAWS,
    *,
    grade_order: bool = True,
) -> FloatArray | None:
    """Grade probabilities with the anchors', the fit's and the students' uncertainty.

    Rule 3a of the module docstring.

    Args:
        mean: posterior mean score of every node.
        covariance: their posterior covariance: an ``n x n`` matrix, or a vector of the
            ``n`` variances when the scores are independent (a diagonal covariance, given
            without forming the ``n x n`` matrix; the same probabilities).
        anchor_nodes: node indices of the anchors.
        anchor_indices: the anchors' known grade indices.
        student_nodes: node indices of the students.
        n_grades: grades on the scale.
        priors: ``n_grades`` prior grade probabilities (need not be normalised).
        rng: the random generator of the anchor draws.
        draws: anchor draws.
        grade_order: the anchor draws in the order of their grades (the rule; ``False``:
            unrestricted, the rule before).

    Returns:
        An array ``(len(student_nodes), n_grades)`` whose rows sum to 1, or ``None`` when
        no draw gives an increasing isotonic fit.
    """
    m = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    a = np.asarray(anchor_nodes, dtype=np.intp)
    s = np.asarray(student_nodes, dtype=np.intp)
    idx = np.asarray(anchor_indices, dtype=np.float64)
    if cov.ndim == 1:  # independent scores: only the blocks rule 3a reads
        s_aa = np.diag(cov[a])
        s_sa = np.zeros((s.size, a.size))
        var_s = cov[s]
    else:
        s_aa = cov[np.ix_(a, a)]
        s_sa = cov[np.ix_(s, a)]
        var_s = np.diagonal(cov)[s]
    scale = max(float(np.mean(np.diag(s_aa))), 1e-12)
    # K = Sigma_sa Sigma_aa^-1 (a tiny jitter keeps exactly dependent anchors solvable)
    gain = np.linalg.solve(s_aa + 1e-9 * scale * np.eye(a.size), s_sa.T).T
    cond_var = var_s - np.sum(gain * s_sa, axis=1)
    cond_sd = np.sqrt(np.maximum(cond_var, 0.0))
    drawn = drawn_boundaries(m[a], s_aa, idx, n_grades, rng, draws, grade_order=grade_order)
    if drawn is None:
        return None
    anchor_draws, boundaries = drawn
    total = np.zeros((s.size, n_grades))
    ones = np.ones(n_grades)
    for x, cut in zip(anchor_draws.T, boundaries, strict=True):
        cond_mean = m[s] + gain @ (x - m[a])
        total += grade_probabilities(cond_mean, cond_sd, cut, ones)
    weighted = total / len(boundaries) * np.asarray(priors, dtype=np.float64)[None, :]
    sums = weighted.sum(axis=1, keepdims=True)
    sums[sums <= 0] = 1.0
    return np.asarray(weighted / sums, dtype=np.float64)


def _health_warnings(
    names: Sequence[str], grades: Sequence[str], idx: FloatArray, x: FloatArray, se: FloatArray
) -> list[str]:
    combined = np.maximum(np.hypot(se[:, None], se[None, :]), _MIN_SE)
    gaps = (x[:, None] - x[None, :]) / combined
    lower, higher = np.nonzero((idx[:, None] < idx[None, :]) & (gaps >= ANCHOR_WARNING_MIN_SE))
    pairs = sorted(zip(lower.tolist(), higher.tolist(), strict=True), key=lambda p: -gaps[p])
    warnings = []
    for i, j in pairs[:_MAX_WARNINGS]:
        gap = float(gaps[i, j])
        warnings.append(
            f"anchor {names[i]} (grade {grades[i]}, score {x[i]:.2f}) scored above "
            f"anchor {names[j]} (grade {grades[j]}, score {x[j]:.2f}): "
            f"{gap:.1f} standard errors the wrong way round"
        )
    if len(pairs) > _MAX_WARNINGS:
        warnings.append(f"... and {len(pairs) - _MAX_WARNINGS} more discordant anchor pairs")
    return warnings


def project_grades(
    scores: ArrayLike,
    se: ArrayLike,
    anchor_nodes: Sequence[int],
    anchor_grades: Sequence[str],
    student_nodes: Sequence[int],
    scale: GradeScale,
    *,
    connected: bool = True,
    labels: Sequence[str] | None = None,
    covariance: ArrayLike | None = None,
    seed: int = 0,
) -> ProjectionResult:
    """Project grades for the students from the anchors' scores and known grades (spec §8).

    The method (isotonic calibration, boundary rule, normal probabilities combined with the
    scale's priors, anchor health check) is described in this module's docstring.

    Args:
        scores: Bradley-Terry scores of all nodes of the batch.
        se: their standard errors.
        anchor_nodes: node indices of the anchors.
        anchor_grades: the anchors' known grades (names on ``scale``).
        student_nodes: node indices of the students to grade.
        scale: the grade scale (grades lowest first, optional priors).
        connected: whether the comparison graph links the anchors to the students (the
            caller checks the graph); ``False`` defers the projection.
        labels: a name per node (e.g. essay ids) for the anchor health warnings; the
            default names nodes by index (``node 7``).
        covariance: the joint posterior covariance of ``scores`` (``n x n``, or a vector
            of the ``n`` variances for independent scores); when given, the
            probabilities carry the boundaries' uncertainty too (rule 3a, seeded by
            ``seed``); otherwise only the students' SEs (rule 3).
        seed: seeds the anchor draws of rule 3a.

    Returns:
        A :class:`ProjectionResult`; deferred, with a reason, when fewer than two distinct
        anchor grades exist, the anchors are not connected to the students, or the anchor
        scores do not increase with their grades at all.

    Raises:
        ValueError: an unknown grade, a node index out of range, a node that is both anchor
            and student, mismatched lengths, non-finite scores or standard errors.
    """
    theta = np.asarray(scores, dtype=np.float64)
    errors = np.asarray(se, dtype=np.float64)
    n = theta.size
    if theta.ndim != 1 or errors.shape != theta.shape:
        raise ValueError("scores and se must be vectors of the same length")
    if len(anchor_nodes) != len(anchor_grades):
        raise ValueError("anchor_nodes and anchor_grades must have the same length")
    unknown = sorted(set(anchor_grades) - set(scale.grades))
    if unknown:
        raise ValueError(f"grade(s) {unknown} are not on the grade scale {scale.name!r}")
    anchors = [int(i) for i in anchor_nodes]
    students = [int(i) for i in student_nodes]
    for i in (*anchors, *students):
        if not 0 <= i < n:
            raise ValueError(f"node index {i} is outside 0..{n - 1}")
    if set(anchors) & set(students):
        raise ValueError("a node cannot be both an anchor and a student")
    used = np.array(anchors + students, dtype=np.intp)
    if not (np.all(np.isfinite(theta[used])) and np.all(np.isfinite(errors[used]))):
        raise ValueError("scores and standard errors must be finite")
    priors = _priors(scale)

    if len(set(anchor_grades)) < 2:
        return ProjectionResult(DEFERRED_TOO_FEW_GRADES, {}, [], [], [])
    if not connected:
        return ProjectionResult(DEFERRED_NOT_CONNECTED, {}, [], [], [])

    a_idx = np.array([scale.index(g) for g in anchor_grades], dtype=np.float64)
    a_x = theta[anchors]
    names = [labels[i] if labels is not None else f"node {i}" for i in anchors]
    warnings = _health_warnings(names, list(anchor_grades), a_idx, a_x, errors[anchors])
    calibration = calibrate(a_x, a_idx, len(scale.grades))
    if calibration is None:
        return ProjectionResult(DEFERRED_NO_ORDER, {}, [], [], warnings)
    fitted, cuts = calibration
    anchor_rows = [
        AnchorCalibration(node=i, grade=g, score=float(x), fitted_index=float(f))
        for i, g, x, f in zip(anchors, anchor_grades, a_x, fitted, strict=True)
    ]
    grades = scale.grades
    boundaries = {f"{grades[k]}|{grades[k + 1]}": float(cuts[k]) for k in range(len(grades) - 1)}
    probs = None
    if covariance is not None:
        probs = joint_grade_probabilities(
            theta,
            covariance,
            anchors,
            a_idx,
            students,
            len(scale.grades),
            priors,
            np.random.default_rng(seed),
        )
    if probs is None:
        probs = grade_probabilities(theta[students], errors[students], cuts, priors)
    ks = np.arange(len(grades), dtype=np.float64)
    rows = []
    for node, p in zip(students, probs, strict=True):
        best = int(np.argmax(p))
        rows.append(
            StudentProjection(
                node=node,
                grade=grades[best],
                confidence=float(p[best]),
                probabilities={g: float(v) for g, v in zip(grades, p, strict=True)},
                expected_index=float(p @ ks),
            )
        )
    return ProjectionResult(None, boundaries, rows, anchor_rows, warnings)

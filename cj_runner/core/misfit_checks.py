"""Check pairs: comparisons that let an essay judged at random show up as misfitting.

Against an opponent of about its own score, an essay the judge answers at random looks
just like one the judge follows: both win about half the time. Only comparisons the model
expects to be lopsided tell them apart (a consistently judged essay almost always wins or
loses as predicted; a coin-tossing one does so half the time), and the adaptive strategies
seldom ask those. ``MISFIT_CHECK_SHARE`` spends a share of each wave on *check pairs*
(docs/statistics.md, "Check pairs"):

* **Who is checked:** the essays whose misfit is least settled. For each node the log
  Bayes factor of "judged at random" against "follows the model" is computed from its
  comparisons so far (:func:`random_judging_log_bf`); nodes without a comparison against
  the far end of the ranking come first, then those whose factor is nearest
  :data:`CHECK_CENTRE`, then (among equals) those with fewer far comparisons.
* **Against whom:** an essay from the far end of the current ranking (the eighth of the
  nodes farthest from it: the lowest for a node above the median, the highest otherwise),
  the farthest one, less ``0.3`` logits per comparison it already has, so that the checks
  spread over the end.

Pure: the comparisons and the posterior in, ordered pairs out; nothing is remembered
between waves, so a resumed batch checks what an uninterrupted one does. On by default
(``MISFIT_CHECK_SHARE`` 0.25); a batch whose budget reaches every pair of the net asks none
(``WorkflowState.checks_needed``, :mod:`cj_runner.core.workflow.selection`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import scipy.special

from cj_runner.core.models import PlannedPair, edge
from cj_runner.core.pairing.orientation import orient

CHECK_CENTRE = 1.0
"""Log Bayes factor (random : model) around which a node's misfit is least settled."""

END_SHARE = 1.0 / 8.0
"""Share of the nodes at each end of the ranking that check pairs draw opponents from."""

_GRID = np.linspace(-5.0, 5.0, 161)  # the node's own score, in prior SDs
_LOG_PRIOR = -0.5 * _GRID**2 - scipy.special.logsumexp(-0.5 * _GRID**2)
_SPREAD = 0.3  # logits of distance given up per comparison the opponent already has

__all__ = ["CHECK_CENTRE", "END_SHARE", "check_pairs", "random_judging_log_bf"]


def random_judging_log_bf(
    n: int,
    first: npt.ArrayLike,
    second: npt.ArrayLike,
    first_won: npt.ArrayLike,
    scores: npt.ArrayLike,
    prior_sd: float,
) -> np.ndarray:
    """Per node, the log Bayes factor of "its comparisons are coin tosses" against "it
    follows the Bradley-Terry model", the opponents at ``scores``.

    Under the model the node's own score has the population prior ``N(0, prior_sd^2)``
    (summed over a grid of 161 points to +-5 SD); under the alternative every
    comparison it takes part in is won with probability 1/2 (the grid sum is within
    0.005 of the integral; tests/core/test_misfit_checks.py). Positive values favour
    random judging; a node without comparisons gets 0.
    """
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(first_won, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    node = np.concatenate([a, b])
    opponent = np.concatenate([s[b], s[a]])
    won = np.concatenate([y, ~y])
    theta = max(float(prior_sd), 1e-6) * _GRID
    margin = theta[None, :] - opponent[:, None]
    loglik = -np.logaddexp(0.0, np.where(won[:, None], -margin, margin))
    per_node = np.zeros((n, _GRID.size))
    np.add.at(per_node, node, loglik)
    count = np.bincount(node, minlength=n)
    marginal = scipy.special.logsumexp(per_node + _LOG_PRIOR[None, :], axis=1)
    return np.where(count > 0, count * np.log(0.5) - marginal, 0.0)


def _ends(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and the highest :data:`END_SHARE` of the nodes (at least two each)."""
    order = np.argsort(scores, kind="stable")
    m = max(2, round(scores.size * END_SHARE))
    return order[:m], order[-m:]


def check_pairs(
    n: int,
    first: npt.ArrayLike,
    second: npt.ArrayLike,
    first_won: npt.ArrayLike,
    scores: npt.ArrayLike,
    prior_sd: float,
    k: int,
    *,
    a_counts: npt.ArrayLike,
    b_counts: npt.ArrayLike,
    orientation_counts: Mapping[tuple[int, int], tuple[int, int]] | None = None,
    blocked: Collection[tuple[int, int]] = frozenset(),
    pending: Sequence[tuple[int, int]] = (),
    rng: np.random.Generator,
) -> list[PlannedPair]:
    """Up to ``k`` check pairs (module docstring), none on a ``blocked`` edge.

    Args:
        n: nodes.
        first, second, first_won: the successful comparisons so far.
        scores: the posterior means selection uses (opponents are placed by them).
        prior_sd: the posterior's prior spread ``tau``.
        k: most pairs to return.
        a_counts, b_counts: per node, comparisons in position A / B (those of the wave
            already chosen and in flight included).
        orientation_counts: edge ``(lo, hi)`` -> (asked as ``(lo, hi)``, as ``(hi, lo)``):
            the pairs are oriented by the fair complement rule of spec §6
            (:func:`cj_runner.core.pairing.orientation.orient`), as every other pair is.
        blocked: edges that may not be asked (chosen in the wave, in flight).
        pending: ordered pairs in flight: they count as comparisons against their
            opponent's end, so a node checked in an earlier wave still in flight is not
            checked again at once.
        rng: breaks ties.
    """
    s = np.asarray(scores, dtype=np.float64)
    if k <= 0 or n < 4 or s.size != n:
        return []
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    low, high = _ends(s)
    median = float(np.median(s))
    # the end each node is checked against, and its comparisons against that end so far
    far_end = np.where(s > median, 0, 1)
    in_end = np.zeros((2, n), dtype=bool)
    in_end[0, low] = True
    in_end[1, high] = True
    pend = np.asarray(pending, dtype=np.int64).reshape(-1, 2)
    node = np.concatenate([a, b, pend[:, 0], pend[:, 1]])
    opp = np.concatenate([b, a, pend[:, 1], pend[:, 0]])
    far = np.bincount(node[in_end[far_end[node], opp]], minlength=n)
    log_bf = random_judging_log_bf(n, a, b, first_won, s, prior_sd)
    unsettled = -np.abs(log_bf - CHECK_CENTRE) - _SPREAD * far - 100.0 * np.minimum(far, 1)
    order = np.lexsort((rng.random(n), -unsettled))
    counts = np.asarray(a_counts, dtype=np.int64) + np.asarray(b_counts, dtype=np.int64)
    taken = set(blocked)
    edges: list[tuple[int, int]] = []
    for i in (int(x) for x in order):
        if len(edges) >= k:
            break
        end = low if far_end[i] == 0 else high
        candidates = [int(j) for j in end if j != i and edge(i, int(j)) not in taken]
        if not candidates:
            continue
        j = max(candidates, key=lambda j: (abs(s[j] - s[i]) - _SPREAD * counts[j], -j))
        edges.append(edge(i, j))
        taken.add(edge(i, j))
        counts[i] += 1
        counts[j] += 1
    return orient(edges, a_counts, b_counts, orientation_counts or {}, rng)

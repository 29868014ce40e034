"""Matching strategies: which candidate edges go into a wave.

A strategy only chooses *edges* (unordered pairs); :mod:`cj_runner.core.pairing` builds
the candidate set for the mode (coverage, resampling, audit) beforehand and orients the
chosen edges afterwards with the fair complement rule, so every strategy gets the same
candidate rules and the same A/B fairness for free.

Interface: a strategy is a function ``(problem, k, rng) -> list[(lo, hi)]`` that returns
at most ``k`` distinct edges, in the order they were chosen, all of them candidates of
``problem`` and, when ``problem.node_cap`` is set, with no node more than ``node_cap``
times. It must draw all randomness from ``rng`` and never break ties by node id. New
strategies (issue 8: ``infogain``, ``grade_boundary``) are added to :data:`REGISTRY`.

Shipped strategies:

* ``balanced`` (default, spec §6): greedy, node first. Within the lowest tier of edge
  counts (resampling: "edges compared least often"), while node-disjoint pairs remain it
  takes the node with the fewest comparisons (ties: fewest free partners left, which
  keeps the wave's matching large; in resampling then the largest ``|A - B|``; then a
  seeded random key) and pairs it with the free partner with the fewest comparisons,
  then (coverage) the closest current score, then the partner that leaves both nodes'
  A/B positions most even once oriented, then the fewest free partners, then a seeded
  random key. When no disjoint pair is left, a short augmenting-path repair (swap one
  chosen pair for two) makes the disjoint part as large as it can, and the rest of the
  wave goes to the pairs whose nodes were used least in it. Counts include the pairs
  already chosen in the wave.
* ``swiss``: like ``balanced`` but the partner is the closest current score first, then
  the fewest comparisons (Pollitt's Swiss pairing: nearest score among the least compared).
* ``random``: uniformly random candidate edges (respecting the resampling node cap).
* ``infogain``: greedy information gain under the Laplace approximation of the current
  fit. The score covariance ``C`` is the inverse of the Bradley-Terry information
  ``sum_edges n_ij p_ij (1 - p_ij) x x^T + lambda I`` (``x = e_i - e_j``,
  ``p_ij = sigmoid(s_i - s_j)``, counts of successful *and in-flight* comparisons, so
  pending calls are counted as if answered). One more comparison of ``(i, j)`` lowers
  ``trace(C)`` by ``w ||C x||^2 / (1 + w x^T C x)`` with ``w = p_ij (1 - p_ij)``
  (Sherman-Morrison): A-optimal sequential design (Atkinson, Donev & Tobias 2007, ch. 10;
  for pairwise comparisons Pfeiffer et al. 2012, "Adaptive polling for information
  aggregation", and Chen et al. 2013, "Pairwise ranking aggregation in a crowdsourced
  setting"). The wave is built greedily: the candidate edge of largest gain among nodes
  not yet used in the wave, ``C`` updated by the rank-one formula after each choice
  (the chosen pair counts as pending), then, once no disjoint pair is left, the largest
  gain among the pairs whose nodes were used least. Up to
  :data:`COVARIANCE_MAX_N` nodes ``C`` is exact; above it only its diagonal is kept,
  approximated by ``1 / (information_i + lambda)``, and the gain becomes
  ``w (v_i^2 + v_j^2) / (1 + w (v_i + v_j))``; a coverage wave then ranks only the
  pairs of a shortlist of the least known nodes (:mod:`cj_runner.core.large_nets`), so
  no ``n x n`` work is done per wave. Ties (e.g. before the first fit) go to a seeded
  random key.
* ``grade_boundary``: ``infogain`` on a weighted trace, ``trace(W C)`` with
  ``W = diag(grade_uncertainty)``: the gain of an edge is
  ``w (C x)^T W (C x) / (1 + w x^T C x)``, so comparisons go to the nodes whose
  projected grade is least certain (the workflow computes the weights with
  :func:`grade_weights`); without weights it is ``infogain``.

The package, by strategy family:

* ``problem``: :class:`SelectionProblem` (what a strategy sees) and :data:`Strategy`;
* ``greedy``: ``balanced``, ``swiss`` and ``random``;
* ``adaptive``: ``infogain``, ``grade_boundary`` and the Laplace approximation they use
  (:func:`laplace_covariance`, :func:`laplace_variances`, :func:`grade_weights`).
"""

from cj_runner.core.strategies.adaptive import (
    COVARIANCE_MAX_N,
    grade_boundary,
    grade_weights,
    infogain,
    laplace_covariance,
    laplace_variances,
)
from cj_runner.core.strategies.greedy import balanced, random_edges, swiss
from cj_runner.core.strategies.problem import Edge, SelectionProblem, Strategy

REGISTRY: dict[str, Strategy] = {
    "balanced": balanced,
    "random": random_edges,
    "swiss": swiss,
    "infogain": infogain,
    "grade_boundary": grade_boundary,
}

__all__ = [
    "COVARIANCE_MAX_N",
    "REGISTRY",
    "Edge",
    "SelectionProblem",
    "Strategy",
    "balanced",
    "grade_boundary",
    "grade_weights",
    "infogain",
    "laplace_covariance",
    "laplace_variances",
    "random_edges",
    "swiss",
]

"""The CJ workflow as a pure state machine: plan a wave, record results, end the wave.

Both the executor (with a judge, a database and concurrency around it) and the
convergence harness (a simulated judge in memory) drive this one class, so selection,
continuation and scoring are the same code in both.

A wave: :meth:`WorkflowState.plan_wave` picks the ordered pairs; the caller asks the
judge and reports every outcome with :meth:`record_success` / :meth:`record_failure`
(and every call sent with :meth:`count_call`); :meth:`end_wave` refits the scores (warm
start), applies the continuation decision (spec §5) and moves to the next mode.

Extensions, all off by default (the default settings select, fit and decide exactly as
before them):

* ``audit_share > 0``: each wave spends that share of its pairs (on average; the
  fraction is a seeded coin per wave) on *audit* pairs, uniformly random over all edges
  not chosen in the wave (and, while resampling, not in the pass), recorded with
  :attr:`Mode.AUDIT`; :attr:`WorkflowState.wave_modes` gives the mode of every planned
  pair. Audits are held-out, design-independent checks of the fit
  (:mod:`cj_runner.core.robust`).
* ``check_share > 0`` (``MISFIT_CHECK_SHARE``):
  that share of each wave (a seeded coin for the fraction, as for audits) goes to *check
  pairs*, an essay whose misfit is least settled against one from the far end of the
  ranking (:func:`cj_runner.core.misfit_checks.check_pairs`), recorded with the wave's
  mode. They come after the main pairs and before the audits, from their own random
  stream, and depend only on the comparisons so far. A batch whose budget reaches every
  pair of the net asks none (its coverage meets both ends of the scale anyway).
* ``strategy="infogain"`` or ``"grade_boundary"``: selection works on the
  empirical-Bayes posterior (:func:`cj_runner.core.robust.empirical_bayes_fit`: its
  mode as the scores, its prior precision, its SEs) instead of the weak-ridge fit,
  whose scale spreads out under adaptive designs and would make the predicted win
  probabilities too extreme. With ``anchor_grades``, ``grade_boundary`` also gets the
  per-node weights of :func:`cj_runner.core.strategies.grade_weights` from that
  posterior. Both are recomputed from the stored comparisons, so a resumed batch selects
  what an uninterrupted one would.
* ``robust_reliability_fn``: called after every fit; :func:`robust_reliability_hook`
  builds the default one (the posterior reliability of :mod:`cj_runner.core.robust`).

Panels (off by default): with ``n_judges >= 2`` and ``double_share > 0``, that share of
each wave's pairs (on average; audit pairs excluded) is also asked of a second judge, as
the pair's complement ``(b, a)``: the wave then holds the pair twice, and
:attr:`WorkflowState.wave_judges` names the judge of both asks (``None`` for the other
pairs: the panel's seeded choice). The second asks come last, count against the wave's
size and the budget like any comparison, and are drawn from a separate random stream, so
a panel without them selects exactly the same pairs.

The package, by responsibility:

* ``state``: :class:`WorkflowState` (ending a wave, the decision), :class:`WaveEnd`,
  :func:`robust_reliability_hook`, :func:`exhausted_decision`;
* ``selection``: planning a wave (pairs, audits, second asks) and selection's posterior;
* ``record``: the state's fields, the recorded comparisons and the per-wave fit.
"""

from cj_runner.core.workflow.record import (
    EXACT_WAVE_SE_MAX_N,
    WAVE_TOLERANCE,
    RobustReliabilityFn,
)
from cj_runner.core.workflow.selection import ADAPTIVE_STRATEGIES
from cj_runner.core.workflow.state import (
    WaveEnd,
    WorkflowState,
    exhausted_decision,
    robust_reliability_hook,
)

__all__ = [
    "ADAPTIVE_STRATEGIES",
    "EXACT_WAVE_SE_MAX_N",
    "WAVE_TOLERANCE",
    "RobustReliabilityFn",
    "WaveEnd",
    "WorkflowState",
    "exhausted_decision",
    "robust_reliability_hook",
]

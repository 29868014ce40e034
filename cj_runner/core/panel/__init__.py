"""Several judges on one scale: per-judge order effects, judge misfit, agreement, kappa.

Model (the judge-specific "home advantage" of a Bradley-Terry panel, as R's ``sirt::btm``
fits one ``eta`` per judge group when asked): for comparison ``k`` made by judge ``j``
showing node ``a`` in position A and node ``b`` in position B,

    logit P(A wins) = theta_a - theta_b + eta_j.

Every judge shares the essays' scores ``theta``; each has its own position-A logit shift
``eta_j``. :func:`fit_panel` maximises the log-likelihood minus the same weak ridge
``lambda / 2 (|theta|^2 + |eta|^2)`` as :func:`cj_runner.core.bt.fit_bt` (with a single
judge it gives exactly ``fit_bt``'s estimate), by damped Newton steps on the dense
``(n + J)``-square information matrix (a few hundred nodes at most in a panel batch;
:data:`PANEL_MAX_NODES` bounds it).

On top of the fit, per judge (all pure, data in, data out):

* infit/outfit mean-squares and their standardised forms (ZSTD, Wilson-Hilferty) over the
  judge's comparisons, with the judge's own order effect in the model (Wright & Masters
  1982; Pollitt 2012 for judge misfit in comparative judgement); a judge is flagged when
  its infit ZSTD exceeds :data:`JUDGE_MISFIT_Z_THRESHOLD` over at least
  :data:`JUDGE_MISFIT_MIN_COMPARISONS` comparisons;
* agreement with the consensus: the share of its decisions won by the node the fitted
  scale ranks higher (Wilson 95% interval);
* its position bias in percentage points: the average marginal effect of ``eta_j`` on
  P(A wins) over its comparisons, with the interval from ``eta_j``'s;
* Cohen's (1960) kappa between every two judges on the edges both judged.

:func:`reliability_without` refits with a judge's comparisons excluded or down-weighted and
reports the scale separation reliability before and after.

The package, by responsibility:

* ``fit``: :class:`PanelComparisons`, :func:`fit_panel`, :class:`PanelFit`;
* ``misfit``: per-judge infit/outfit, held-out probabilities, flagging, and the refit
  without (or with less of) a judge;
* ``agreement``: consensus agreement, position bias, Cohen's kappa.
"""

from cj_runner.core.panel.agreement import (
    KAPPA_MIN_SHARED_EDGES,
    Kappa,
    PositionBias,
    cohen_kappa,
    consensus_agreement,
    pairwise_kappa,
    position_bias_pp,
)
from cj_runner.core.panel.fit import PANEL_MAX_NODES, PanelComparisons, PanelFit, fit_panel
from cj_runner.core.panel.misfit import (
    JUDGE_MISFIT_MIN_COMPARISONS,
    JUDGE_MISFIT_Z_THRESHOLD,
    JudgeFit,
    JudgeMisfit,
    ReliabilityChange,
    flag_judges,
    held_out_probabilities,
    judge_fit,
    judge_misfit,
    misfit_weights,
    reliability_without,
)

__all__ = [
    "JUDGE_MISFIT_MIN_COMPARISONS",
    "JUDGE_MISFIT_Z_THRESHOLD",
    "KAPPA_MIN_SHARED_EDGES",
    "PANEL_MAX_NODES",
    "JudgeFit",
    "JudgeMisfit",
    "Kappa",
    "PanelComparisons",
    "PanelFit",
    "PositionBias",
    "ReliabilityChange",
    "cohen_kappa",
    "consensus_agreement",
    "fit_panel",
    "flag_judges",
    "held_out_probabilities",
    "judge_fit",
    "judge_misfit",
    "misfit_weights",
    "pairwise_kappa",
    "position_bias_pp",
    "reliability_without",
]

"""Does the unpenalised maximum likelihood estimate exist? (``prior_precision=0``)

Zermelo (1929) / Ford (1957) for the scores, a linear programme (Albert & Anderson 1984)
for the order effect; :class:`MLENotFoundError` names the nodes that make it fail.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from cj_runner.core.bt.data import IntArray, _Data, _sum_by


class MLENotFoundError(ValueError):
    """The maximum likelihood estimate does not exist (or is not unique) for these data.

    Raised by :func:`fit_bt` with ``prior_precision=0`` when some group of nodes never lost
    (or never won) against the rest, a node has no comparisons, or the order effect cannot
    be separated from the scores. A ``prior_precision > 0`` always gives a finite fit.
    """


def _describe(nodes: IntArray) -> str:
    shown = ", ".join(str(int(i)) for i in nodes[:10])
    return f"[{shown}{', ...' if nodes.size > 10 else ''}]"


def _check_mle_exists(data: _Data, order_effect: bool) -> None:
    """Raise :class:`MLENotFoundError` when the unpenalised MLE does not exist."""
    n = data.n
    hint = "; fit with prior_precision > 0 instead"
    if n == 1:
        if order_effect:
            raise MLENotFoundError("the order effect cannot be estimated without comparisons")
        return
    node_weight = _sum_by(data.a, data.total, n) + _sum_by(data.b, data.total, n)
    isolated = np.flatnonzero(node_weight == 0)
    if isolated.size:
        raise MLENotFoundError(
            "maximum likelihood estimate does not exist: nodes "
            f"{_describe(isolated)} have no comparisons{hint}"
        )
    # Zermelo (1929) / Ford (1957): the MLE exists iff the graph with an arc loser -> winner
    # for every outcome is strongly connected.
    a_won = data.wins > 0
    b_won = data.total - data.wins > 0
    losers = np.concatenate([data.b[a_won], data.a[b_won]])
    winners = np.concatenate([data.a[a_won], data.b[b_won]])
    graph = scipy.sparse.csr_array((np.ones(losers.size), (losers, winners)), shape=(n, n))
    n_comp, label = scipy.sparse.csgraph.connected_components(
        graph, directed=True, connection="strong"
    )
    if n_comp > 1:
        lost_outside = np.zeros(n_comp, dtype=bool)
        across = label[losers] != label[winners]
        lost_outside[label[losers][across]] = True
        group = int(np.flatnonzero(~lost_outside)[0])
        raise MLENotFoundError(
            "maximum likelihood estimate does not exist: nodes "
            f"{_describe(np.flatnonzero(label == group))} never lost a comparison to a node "
            "outside this group, so their scores would grow without bound (the win/loss "
            f"graph is not strongly connected){hint}"
        )
    if order_effect:
        _check_order_effect_bounded(data, hint)


def _check_order_effect_bounded(data: _Data, hint: str) -> None:
    """LP test: is there a direction (v, c) that raises no outcome's fit and some strictly?

    Outcome k with A winning is non-decreasing along ``(v, c)`` iff ``v_a - v_b + c >= 0``.
    If a direction makes all such terms >= 0 with a positive sum, the log-likelihood
    increases for ever along it and the MLE does not exist (Albert & Anderson 1984).
    """
    n = data.n
    a_won = data.wins > 0
    b_won = data.total - data.wins > 0
    rows_a = np.concatenate([data.a[a_won], data.a[b_won]])
    rows_b = np.concatenate([data.b[a_won], data.b[b_won]])
    sign = np.concatenate([np.ones(a_won.sum()), -np.ones(b_won.sum())])
    k = sign.size
    r = np.arange(k)
    # constraint: -sign * (v_a - v_b + c) <= 0
    a_ub = scipy.sparse.csr_array(
        (
            np.concatenate([-sign, sign, -sign]),
            (np.concatenate([r, r, r]), np.concatenate([rows_a, rows_b, np.full(k, n)])),
        ),
        shape=(k, n + 1),
    )
    objective = np.asarray(a_ub.sum(axis=0)).ravel()  # minimise -sum_k sign_k (...)
    from scipy.optimize import linprog  # here: importing it costs every report ~0.2 s

    result = linprog(objective, A_ub=a_ub, b_ub=np.zeros(k), bounds=(-1.0, 1.0), method="highs")
    if result.status == 0 and -result.fun > 1e-7:
        raise MLENotFoundError(
            "maximum likelihood estimate with an order effect does not exist: the outcomes "
            "can be fitted ever better by pushing the position-A effect (and scores) towards "
            f"infinity, e.g. position A (or B) won every comparison{hint}"
        )

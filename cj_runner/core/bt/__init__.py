"""Bradley-Terry scores with standard errors and an optional order effect.

Model (Bradley & Terry 1952; the position term is the "home advantage" of Agresti 2002,
§10.6, and the ``eta`` of R's ``sirt::btm``): for a comparison that shows node ``a`` in
position A and node ``b`` in position B,

    logit P(A wins) = theta_a - theta_b + eta,        eta = 0 unless ``order_effect``.

:func:`fit_bt` maximises the log-posterior

    sum_k w_k [y_k log p_k + (1 - y_k) log(1 - p_k)] - (lambda / 2) (|theta|^2 + eta^2)

with a weak Gaussian prior (ridge) of precision ``lambda`` (:data:`DEFAULT_PRIOR_PRECISION`)
by damped Newton iterations. The Hessian of the log-likelihood in ``theta`` is a weighted
graph Laplacian with edge weights ``w p (1 - p)``; it is solved densely (Cholesky) for small
batches and by Jacobi-preconditioned conjugate gradients on a ``scipy.sparse`` matrix for
large ones, so nothing loops over comparisons in Python. Because every comparison adds the
same amount to one node's gradient as it takes from the other's, the optimum of the ridge
objective has ``sum(theta) = 0``: the scores come out centred without a constraint.

Standard errors come from the observed Fisher information ``H`` (the negative Hessian of the
log-posterior) under the sum-to-zero constraint: the covariance of the centred scores is
``P H^-1 P`` with ``P = I - 11'/n`` (for ``lambda = 0`` this is the Moore-Penrose inverse of
the Laplacian). Up to :data:`EXACT_COVARIANCE_MAX_N` nodes the full matrix is computed;
above it the variances use the Gaussian belief propagation approximation documented in
:func:`fit_bt`.

The package, by responsibility:

* ``fit``: :func:`fit_bt`, :class:`BTFit`, :func:`max_score_change`;
* ``data``: the comparisons checked and aggregated, their CSR layout, and the one cache
  that prepares the same read-only arrays once (``_prepared``);
* ``solver``: the information matrix, its Cholesky and conjugate-gradient solves, the
  covariance and the approximate variances;
* ``newton``: the objective, its derivatives and the damped Newton iterations;
* ``existence``: whether the unpenalised MLE exists (:class:`MLENotFoundError`).
"""

from cj_runner.core.bt.data import DEFAULT_PRIOR_PRECISION
from cj_runner.core.bt.existence import MLENotFoundError
from cj_runner.core.bt.fit import EXACT_COVARIANCE_MAX_N, BTFit, fit_bt, max_score_change

__all__ = [
    "DEFAULT_PRIOR_PRECISION",
    "EXACT_COVARIANCE_MAX_N",
    "BTFit",
    "MLENotFoundError",
    "fit_bt",
    "max_score_change",
]

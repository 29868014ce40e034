"""Benchmark: cj-runner's Bradley-Terry fit against choix.ilsr_pairwise.

Run from the repository root (choix comes with the ``dev`` extra)::

    python benchmarks/bench_scoring.py

Both fits run on the same synthetic data in the same process: true scores drawn from
N(0, 1), uniformly random ordered pairs, outcomes drawn from the Bradley-Terry model. Our fit
is timed *with* standard errors (``fit_bt`` defaults: the weak prior, exact covariance up to
``EXACT_COVARIANCE_MAX_N`` nodes, the documented approximation above). choix is timed on its
own input format (a list of ``(winner, loser)`` pairs built beforehand, not timed). Both
log-likelihoods are computed by the same formula from the returned scores. The table shows
medians over the repeats; the targets are checked at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

# isort: off
import cj_runner  # noqa: F401  (first: one BLAS thread, as the product runs)

# isort: on
import numpy as np
import scipy
from numpy.typing import NDArray

from cj_runner.core.bt import EXACT_COVARIANCE_MAX_N, fit_bt

choix: Any
try:
    import choix
except ImportError:  # pragma: no cover - choix is a dev dependency
    choix = None

# (nodes, comparisons, our repeats, choix repeats; 0 = skip choix)
SIZES: list[tuple[int, int, int, int]] = [
    (100, 2_000, 9, 5),
    (1_000, 50_000, 7, 3),
    # choix.ilsr_pairwise builds a dense 10,000 x 10,000 Markov chain (800 MB) in a Python
    # loop over the 500,000 comparisons at every iteration: minutes, so it is skipped.
    (10_000, 500_000, 3, 0),
]


@dataclass
class Row:
    n: int
    m: int
    ours: float
    ours_loglik: float
    mle_loglik: float
    choix_time: float | None
    choix_loglik: float | None


def synthetic(
    n: int, m: int, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 1.0, n)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1.0 / (1.0 + np.exp(-(true[a] - true[b])))
    return a, b, won


def loglik(
    scores: NDArray[np.float64], a: NDArray[np.intp], b: NDArray[np.intp], won: NDArray[np.bool_]
) -> float:
    d = scores[a] - scores[b]
    return float(-np.sum(np.where(won, np.logaddexp(0.0, -d), np.logaddexp(0.0, d))))


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times = []
    result: object = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(seed: int, quick: bool) -> list[Row]:
    rows = []
    for n, m, ours_repeats, choix_repeats in SIZES:
        a, b, won = synthetic(n, m, seed)
        fit_bt(n, a, b, won)  # warm-up (imports, caches)
        ours_time, fit = median_time(
            partial(fit_bt, n, a, b, won),
            max(1, ours_repeats // 3) if quick else ours_repeats,
        )
        scores = fit.scores  # type: ignore[attr-defined]
        mle = fit_bt(n, a, b, won, prior_precision=0, compute_se=False).scores
        row = Row(n, m, ours_time, loglik(scores, a, b, won), loglik(mle, a, b, won), None, None)
        if choix is not None and choix_repeats:
            data = list(
                zip(np.where(won, a, b).tolist(), np.where(won, b, a).tolist(), strict=True)
            )
            choix_time, params = median_time(
                partial(choix.ilsr_pairwise, n, data),
                1 if quick else choix_repeats,
            )
            row.choix_time = choix_time
            row.choix_loglik = loglik(np.asarray(params), a, b, won)
        rows.append(row)
    return rows


def relative_gap(ours: float, theirs: float) -> float:
    return (ours - theirs) / abs(theirs)


def report(rows: list[Row]) -> bool:
    columns = [
        ("nodes", 6),
        ("comparisons", 11),
        ("cj-runner (s)", 13),
        ("choix (s)", 9),
        ("speed-up", 8),
        ("loglik cj-runner", 16),
        ("loglik choix", 14),
        ("rel. gap", 9),
        ("rel. gap MLE", 12),
    ]
    print("| " + " | ".join(f"{name:>{width}}" for name, width in columns) + " |")
    print("|" + "|".join("-" * (width + 1) + ":" for _, width in columns) + "|")
    ok = True
    for r in rows:
        cells = [f"{r.n:,}", f"{r.m:,}", f"{r.ours:.3f}"]
        if r.choix_time is None or r.choix_loglik is None:
            cells += ["skipped", "-", f"{r.ours_loglik:.4f}", "-", "-", "-"]
        else:
            cells += [
                f"{r.choix_time:.3f}",
                f"{r.choix_time / r.ours:.1f}x",
                f"{r.ours_loglik:.4f}",
                f"{r.choix_loglik:.4f}",
                f"{relative_gap(r.ours_loglik, r.choix_loglik):+.1e}",
                f"{relative_gap(r.mle_loglik, r.choix_loglik):+.1e}",
            ]
        print(
            "| " + " | ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True)) + " |"
        )
    print()
    print("cj-runner: fit_bt with standard errors and its default weak prior (median time).")
    print("rel. gap: (loglik cj-runner - loglik choix) / |loglik choix|, positive = ours higher;")
    print("'MLE' refits cj-runner with prior_precision=0 (untimed), the same estimator as choix.")
    print("choix skipped at n=10,000: its dense 10,000 x 10,000 Markov chain and per-comparison")
    print("Python loop would take minutes.")
    print()
    for r in rows:
        if r.n == 1_000 and r.choix_time is not None and r.choix_loglik is not None:
            speed_ok = r.choix_time / r.ours >= 5.0
            ll_ok = relative_gap(r.ours_loglik, r.choix_loglik) >= -1e-6
            ok &= speed_ok and ll_ok
            print(f"target n=1,000: >= 5x faster than choix ........ {_verdict(speed_ok)}")
            print(f"target n=1,000: loglik no lower (rel 1e-6) ..... {_verdict(ll_ok)}")
        if r.n == 10_000:
            fast = r.ours < 3.0
            ok &= fast
            print(f"target n=10,000: under 3 s with SEs ............ {_verdict(fast)}")
    return ok


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20240601, help="data seed")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"choix {_version('choix') if choix is not None else 'not installed'}, "
        f"{os.cpu_count()} CPUs; exact covariance up to n={EXACT_COVARIANCE_MAX_N:,}"
    )
    if choix is None:
        print("choix is not installed (pip install -e '.[dev]'): timing cj-runner only")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(
            f"warning: load average {load:.1f}; other processes skew the timings (multi-threaded "
            "BLAS suffers most), run on an idle machine for representative numbers"
        )
    print()
    ok = report(run(args.seed, args.quick))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())

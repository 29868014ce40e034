"""``benchmarks/bench_large_posterior.py``'s "selection tau" column: a value only for the
strategies that select pairs with ``tau`` (``ADAPTIVE_STRATEGIES``), "-" for ``random``
and ``balanced`` and for a cpe the batch did not reach. With a ``TARGET_RELIABILITY``
stop the workflow state of every strategy holds the empirical-Bayes posterior (the
robust reliability reuses it), which the column printed as selection's ``tau``. Tiny
seeded runs of the benchmark itself (the target is never reached: the budget stops)."""

from __future__ import annotations

import math

import pytest

from benchmarks import bench_large_posterior as bench


def test_selection_tau_is_a_dash_for_strategies_that_select_without_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--sizes", "24", "--cpe", "6", "--strategies", "random,balanced,infogain"]
    assert bench.main([*argv, "--replicates", "1", "--target-reliability", "0.99"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split(" | ")[1]: line.split(" | ") for line in out.splitlines() if "| 24 |" in line
    }
    header = next(line for line in out.splitlines() if line.startswith("| n |")).split(" | ")
    column = header.index("selection tau at 1/2/4/8 cpe")
    assert rows["random"][column] == "-/-/-/-"
    assert rows["balanced"][column] == "-/-/-/-"
    infogain = rows["infogain"][column].split("/")
    # infogain selects with tau from its first wave; 8 cpe is past this batch's 6
    assert infogain[3] == "-"
    assert all(float(v) > 0 for v in infogain[:3])
    runs = {line.split()[1]: line for line in out.splitlines() if line.startswith("n=24 ")}
    assert "selection tau at 1/2/4/8 cpe -/-/-/-," in runs["random"]
    assert "selection tau at 1/2/4/8 cpe -/-/-/-," in runs["balanced"]


def test_a_run_under_random_records_no_selection_tau() -> None:
    row = bench.run(24, "random", 6, 0, "product", target=0.99)
    assert all(math.isnan(row[f"tau@{m}"]) for m in bench.MILESTONES)
    row = bench.run(24, "infogain", 6, 0, "product", target=0.99)
    assert not math.isnan(row["tau@1"])

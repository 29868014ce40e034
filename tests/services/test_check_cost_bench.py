"""``benchmarks/bench_check_cost.py`` (docs/statistics.md, "Check pairs") runs the three
ways on the same batches and prints a row for each."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_check_cost as bench


def test_the_three_ways_share_their_batches_and_differ_only_by_design(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = bench.accuracy("random", 16, 8.0, 0.0, 2, seed=5)
    again = bench.accuracy("random", 16, 8.0, 0.0, 2, seed=5)
    checked = bench.accuracy("random", 16, 8.0, 0.25, 2, seed=5)
    assert np.array_equal(plain[0], again[0])  # seeded: the same batches
    assert not np.array_equal(plain[0], checked[0])  # check pairs change the design
    assert np.all((plain[1] > 0.5) & (plain[1] <= 1.0))
    assert bench.main(["--quick", "--strategies", "random", "--n", "16", "--cpe", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("| random |") == 3
    assert f"MISFIT_CHECK_SHARE={bench.Settings().MISFIT_CHECK_SHARE:g}, 8 cpe" in out
    assert "no check pairs, 6 cpe" in out  # the budget cut by the same share

"""Misfit flags in simulation (issue 13 item 5): with a judge that follows the
Bradley-Terry model exactly at most 5% of nodes are flagged; an essay judged at random is
caught at 20 comparisons per essay. A few seeded replicates (the full figures come from
``benchmarks/bench_calibration.py``)."""

from __future__ import annotations

import numpy as np

from cj_runner.services.misfit_sim import ErraticJudge, misfit_rates


def test_false_alarms_and_detection_at_20_comparisons_per_essay() -> None:
    # the default settings (check pairs on), a cell of the calibration benchmark; 30
    # seeded replicates (measured: 2.8% false alarms, 27 of 30 caught)
    rates = misfit_rates(n=24, cpe=20, strategy="random", replicates=30, seed=0)
    assert rates.check_share > 0
    assert rates.false_alarm_rate <= 0.05
    assert rates.erratic_false_alarm_rate <= 0.05
    assert rates.detection_rate >= 0.8


def test_the_erratic_judge_tosses_a_coin_only_for_its_node() -> None:
    judge = ErraticJudge(np.array([3.0, -3.0, 0.0]), erratic=2)
    assert judge.p_a_wins(0, 2) == judge.p_a_wins(2, 1) == 0.5
    assert judge.p_a_wins(0, 1) > 0.99

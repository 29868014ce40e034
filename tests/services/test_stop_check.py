"""The line that says what the ``TARGET_RELIABILITY`` stop checked."""

from __future__ import annotations

from cj_runner.services.stop_check import stop_detail


def test_the_line_names_the_estimate_its_sd_the_bound_and_the_target() -> None:
    check = {
        "robust_reliability": 0.8754,
        "posterior_sd": 0.0377,
        "z": 2.0,
        "lower_bound": 0.8,
        "target": 0.8,
        "comparisons": 312,
    }
    assert stop_detail(check) == (
        "robust reliability 0.875 ± 0.038 at 312 comparisons: its lower bound "
        "(estimate − 2 SD) 0.800 reached the target 0.800"
    )


def test_z_zero_is_the_estimate_itself() -> None:
    check = {"robust_reliability": 0.81, "z": 0.0, "lower_bound": 0.81, "target": 0.8}
    assert stop_detail(check) == (
        "robust reliability 0.810: the estimate 0.810 reached the target 0.800"
    )


def test_no_check_no_line() -> None:
    assert stop_detail(None) is None
    assert stop_detail({}) is None
    assert stop_detail({"robust_reliability": 0.9, "target": 0.8}) is None  # no bound

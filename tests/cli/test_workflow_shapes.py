"""The reference shapes of spec §11, end to end through the CLI with the mock judge and a
real SQLite file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.cli.helpers import LOWER5, REGULAR24, execute_json, query, write_profile

SHAPE_SETTINGS = {
    "SCORE_STABILITY_THRESHOLD": 0.0,  # stability off: the shapes run to their caps
    "MAX_ITERATIONS": 200,
    "USE_ANCHORS": False,
    "MATCHING_STRATEGY": "balanced",  # spec §6's order, pinned: the default is infogain
    "SEED": 11,
}
CLEAN_JUDGE = {"kind": "mock", "seed": 3, "noise": 1.0, "latency": {"distribution": "zero"}}


def node_counts(db: Path, batch_id: str) -> list[tuple[int, int, int]]:
    return query(
        db,
        "SELECT a_count, b_count, comparison_count FROM nodes WHERE batch_id=? ORDER BY idx",
        (batch_id,),
    )


def successes(db: Path, batch_id: str) -> list[tuple[int, int, str, int]]:
    return query(
        db,
        "SELECT a_idx, b_idx, mode, wave FROM comparisons "
        "WHERE batch_id=? AND status='success' ORDER BY slot",
        (batch_id,),
    )


def test_lower5_shape(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    s = execute_json(db, ["--inventory", str(LOWER5), "--profile", "mock_lower5"])
    assert s["status"] == "COMPLETED"
    assert s["stop_reason"] == "resampling_cap"
    assert s["calls_sent"] == 40
    assert s["successful_comparisons"] == 40
    assert s["success_rate"] == 1.0
    assert s["resampling_pass_count"] == 3
    assert s["max_possible_pairs"] == 10 and s["successful_pairs_count"] == 10
    assert node_counts(db, s["batch_id"]) == [(8, 8, 16)] * 5
    rows = successes(db, s["batch_id"])
    assert Counter(r[2] for r in rows) == {"coverage": 10, "resampling": 30}
    orientations: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for a, b, _mode, _wave in rows:
        orientations.setdefault((min(a, b), max(a, b)), set()).add((a, b))
    assert all(len(o) == 2 for o in orientations.values())  # both orientations everywhere


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(552, [(23, 23, 46)] * 24), (288, None)],
)
def test_regular_24_shapes(tmp_path: Path, budget: int, expected: object) -> None:
    db = tmp_path / "cj.db"
    profile = write_profile(tmp_path / "shape.yaml", SHAPE_SETTINGS, CLEAN_JUDGE)
    s = execute_json(
        db,
        [
            "--inventory",
            str(REGULAR24),
            "--profile",
            str(profile),
            "--max-comparisons",
            str(budget),
        ],
    )
    assert s["status"] == "COMPLETED"
    assert s["stop_reason"] == "budget"
    assert s["calls_sent"] == budget
    counts = node_counts(db, s["batch_id"])
    rows = successes(db, s["batch_id"])
    assert Counter(r[2] for r in rows) == {"coverage": 276, "resampling": budget - 276}
    if expected is not None:
        assert counts == expected
        assert s["max_skew"] == 0.0
    else:
        assert [c for _, _, c in counts] == [24] * 24


def test_same_seed_gives_the_same_comparison_sequence(tmp_path: Path) -> None:
    profile = write_profile(
        tmp_path / "p.yaml",
        {**SHAPE_SETTINGS, "MAX_CONCURRENT_REQUESTS": 4},
        {**CLEAN_JUDGE, "latency": {"distribution": "lognormal", "median_ms": 1, "sigma": 1.0}},
    )
    args = ["--inventory", str(REGULAR24), "--profile", str(profile), "--max-comparisons", "150"]
    first = execute_json(tmp_path / "one.db", args)
    second = execute_json(tmp_path / "two.db", args)
    sql = (
        "SELECT slot, attempt, a_idx, b_idx, mode, wave, status, winner FROM comparisons "
        "WHERE batch_id=? ORDER BY slot, attempt"
    )
    one = query(tmp_path / "one.db", sql, (first["batch_id"],))
    two = query(tmp_path / "two.db", sql, (second["batch_id"],))
    assert len(one) == 150
    assert one == two
    different = execute_json(tmp_path / "three.db", [*args, "--seed", "12"])
    three = query(tmp_path / "three.db", sql, (different["batch_id"],))
    assert [r[2:4] for r in three] != [r[2:4] for r in one]


def test_transient_errors_complete_and_every_attempt_counts(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    profile = write_profile(
        tmp_path / "flaky.yaml",
        {**SHAPE_SETTINGS, "RETRY_BASE_DELAY_S": 0.001, "RETRY_MAX_DELAY_S": 0.002},
        {**CLEAN_JUDGE, "errors": {"timeout": 0.1, "rate_limit": 0.1, "server_error": 0.1}},
    )
    s = execute_json(
        db, ["--inventory", str(REGULAR24), "--profile", str(profile), "--max-comparisons", "200"]
    )
    assert s["status"] == "COMPLETED"
    assert s["calls_sent"] == 200
    attempts = query(
        db, "SELECT status, call_no FROM comparisons WHERE batch_id=?", (s["batch_id"],)
    )
    sent = [call for _, call in attempts if call is not None]
    assert sorted(sent) == list(range(1, 201))  # every call stored, none twice
    statuses = Counter(status for status, _ in attempts)
    assert statuses["retried"] > 20  # about 30% of attempts were errors
    assert statuses["success"] == s["successful_comparisons"]
    assert s["successful_comparisons"] + statuses["retried"] + statuses["failed"] <= 200
    assert s["success_rate"] >= 0.8


def test_a_judge_that_always_fails_ends_failed(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    profile = write_profile(
        tmp_path / "broken.yaml",
        {**SHAPE_SETTINGS, "RETRY_BASE_DELAY_S": 0.001, "RETRY_MAX_DELAY_S": 0.002},
        {**CLEAN_JUDGE, "errors": {"server_error": 1.0}},
    )
    s = execute_json(db, ["--inventory", str(LOWER5), "--profile", str(profile)])
    assert s["status"] == "FAILED"
    assert s["stop_reason"] == "success_rate"
    assert s["successful_comparisons"] == 0
    rows = query(
        db,
        "SELECT COUNT(*) FROM comparisons WHERE batch_id=? AND call_no IS NOT NULL",
        (s["batch_id"],),
    )
    assert rows[0][0] == s["calls_sent"] > 0


def test_a_pair_asked_again_after_a_failure_is_a_new_draw(tmp_path: Path) -> None:
    # 60% of attempts fail: about 22% of comparisons use up their three attempts; asked
    # again later they must not fail the same way every time, so the batch completes
    db = tmp_path / "cj.db"
    profile = write_profile(
        tmp_path / "flaky5.yaml",
        {
            **SHAPE_SETTINGS,
            "MIN_RESAMPLING_NET_SIZE": 5,
            "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 3,
            "RETRY_BASE_DELAY_S": 0.001,
            "RETRY_MAX_DELAY_S": 0.002,
        },
        {**CLEAN_JUDGE, "seed": 9, "errors": {"timeout": 0.3, "server_error": 0.3}},
    )
    s = execute_json(
        db, ["--inventory", str(LOWER5), "--profile", str(profile), "--max-comparisons", "200"]
    )
    assert s["status"] == "COMPLETED", s
    assert s["successful_pairs_count"] == 10
    assert s["success_rate"] >= 0.8

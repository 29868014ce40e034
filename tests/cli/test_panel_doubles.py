"""A panel asks a share of its pairs of two judges on purpose (``PANEL_DOUBLE_SHARE``),
through the real commands on real SQLite files: both answers stored with their judges,
every two judges get shared pairs for Cohen's kappa, the budget holds every call, the
same seed gives the same calls; `plan` and `dry-run` show them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import REGULAR24, query, report, run

JUDGES = ("steady", "biased", "erratic")

PANEL_WITH_ERRORS = """\
kind: mock
name: failing-panel
seed: 4
panel:
  - judge:
      kind: mock
      name: one
      noise: 0.8
      errors: {server_error: 0.25}
  - judge:
      kind: mock
      name: two
      noise: 1.2
      errors: {timeout: 0.2}
  - judge:
      kind: mock
      name: three
      noise: 1.0
"""


def _execute(db: Path, *extra: str, judge: str = "mock_panel", budget: int = 240) -> None:
    result = run(
        [
            "execute",
            "-i",
            str(REGULAR24),
            "--judge",
            judge,
            "--max-comparisons",
            str(budget),
            "--batch-name",
            "panel",
            "--db",
            str(db),
            "--no-cache",
            "-q",
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output


def _same(db: Path) -> list[tuple[Any, ...]]:
    """What must not depend on timing: every attempt but its call number (the order in
    which concurrent calls went out)."""
    return [c[:9] + c[10:] for c in _calls(db)]


def _calls(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT slot, attempt, wave, mode, a_idx, b_idx, judge, status, winner, call_no, "
        "repeat_index FROM comparisons ORDER BY slot, attempt",
    )


def _doubles(db: Path) -> Counter[tuple[str, str]]:
    """The pairs a wave asked twice, by the two judges asked."""
    rows = query(
        db,
        "SELECT wave, min(a_idx, b_idx), max(a_idx, b_idx), group_concat(judge, ','), "
        "count(*) FROM comparisons WHERE attempt = 1 GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    out: Counter[tuple[str, str]] = Counter()
    for _, _, _, judges, n in rows:
        assert n == 2
        a, b = sorted(judges.split(","))
        assert a != b
        out[(a, b)] += 1
    return out


@pytest.fixture(scope="module")
def doubled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("doubles") / "cj.db"
    # check pairs off: they may repeat an edge, and the counts below take every main pair
    # as a new edge
    _execute(db, "--seed", "3", "--set", "PANEL_DOUBLE_SHARE=0.2", "--set", "MISFIT_CHECK_SHARE=0")
    return db


def test_every_two_judges_get_kappa_from_the_pairs_asked_of_both(doubled: Path) -> None:
    doubles = _doubles(doubled)
    # 12 calls a wave: 10 pairs and 2 second asks (12 * 0.2 / 1.2), 20 waves
    assert sum(doubles.values()) == 40
    pairs = {tuple(sorted(p)) for p in [("steady", "biased"), ("steady", "erratic"),
                                        ("biased", "erratic")]}  # fmt: skip
    assert set(doubles) == pairs
    assert max(doubles.values()) - min(doubles.values()) <= 1  # 13, 13 and 14
    result = report(["judges", "panel", "--db", str(doubled), "--format", "json"])
    assert result.exit_code == 0, result.output
    kappa = {
        tuple(sorted((k["judge_a"], k["judge_b"]))): k for k in json.loads(result.stdout)["kappa"]
    }
    assert set(kappa) == pairs
    for pair, row in kappa.items():
        assert row["shared_edges"] >= doubles[pair] >= 13
        assert row["asked_of_both"] == doubles[pair]
        assert row["kappa"] is not None
    table = report(["judges", "panel", "--db", str(doubled)])
    assert "shared pairs" in table.output
    assert "asked of both" in table.output
    for pair, row in kappa.items():
        counts = [str(row["shared_edges"]), str(row["asked_of_both"])]
        assert any(
            line.split()[:4] in ([*pair, *counts], [pair[1], pair[0], *counts])
            for line in table.output.splitlines()
        )


def test_both_answers_are_stored_with_their_judges_and_enter_the_fit(doubled: Path) -> None:
    calls = _calls(doubled)
    assert len(calls) == 240
    assert {c[6] for c in calls} == set(JUDGES)  # every comparison names its judge
    assert all(c[7] == "success" for c in calls)
    by_wave_edge: dict[tuple[int, int, int], list[tuple[Any, ...]]] = {}
    for c in calls:
        by_wave_edge.setdefault((c[2], min(c[4], c[5]), max(c[4], c[5])), []).append(c)
    for rows in by_wave_edge.values():
        if len(rows) == 2:  # the second ask is the complement, asked of another judge
            first, second = rows
            assert (second[4], second[5]) == (first[5], first[4])
            assert first[6] != second[6] and first[3] == second[3] == "coverage"
    (successes, calls_sent, edges), = query(
        doubled, "SELECT successes, calls_sent, successful_pairs_count FROM batch_state"
    )  # fmt: skip
    assert (successes, calls_sent, edges) == (240, 240, 200)
    per_judge = json.loads(
        report(["judges", "panel", "--db", str(doubled), "--format", "json"]).stdout
    )["judges"]
    assert sum(j["comparisons"] for j in per_judge) == 240  # each answer with its judge
    exported = report(["comparisons", "panel", "--db", str(doubled), "--format", "json"])
    assert exported.exit_code == 0, exported.output
    judges = Counter(r["judge"] for r in json.loads(exported.stdout)["comparisons"])
    stored = Counter(c[6] for c in calls)
    assert judges == stored


def test_the_same_seed_gives_the_same_calls(doubled: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.db"
    _execute(
        again, "--seed", "3", "--set", "PANEL_DOUBLE_SHARE=0.2", "--set", "MISFIT_CHECK_SHARE=0"
    )
    assert _same(again) == _same(doubled)


def test_the_budget_holds_every_call_with_retries(tmp_path: Path) -> None:
    profile = tmp_path / "failing_panel.yaml"
    profile.write_text(PANEL_WITH_ERRORS, encoding="utf-8")
    dbs = []
    for k in range(2):
        db = tmp_path / f"f{k}.db"
        _execute(
            db, "--seed", "5", "--set", "PANEL_DOUBLE_SHARE=0.3", judge=str(profile), budget=100
        )
        dbs.append(db)
    calls = _calls(dbs[0])
    numbers = [c[9] for c in calls if c[9] is not None]
    assert len(numbers) == len(set(numbers)) <= 100 and max(numbers) <= 100
    assert any(c[7] == "retried" for c in calls)  # retries happened and were counted
    assert sum(_doubles(dbs[0]).values()) > 0
    (sent,) = query(dbs[0], "SELECT calls_sent FROM batch_state")[0]
    assert sent <= 100
    assert _same(dbs[1]) == _same(dbs[0])  # the same calls whatever the timing


def test_a_panel_doubles_a_tenth_by_default_and_one_judge_never(tmp_path: Path) -> None:
    db = tmp_path / "default.db"
    _execute(db, "--seed", "2")
    doubles = _doubles(db)
    assert 0 < sum(doubles.values()) <= round(240 * 0.1 / 1.1) + 20  # about 22 of 240 calls
    single = tmp_path / "single.db"
    _execute(single, "--seed", "2", "--set", "PANEL_DOUBLE_SHARE=0.5", judge="mock_default")
    assert _doubles(single) == Counter()
    assert {c[6] for c in _calls(single)} == {None}


def test_the_share_is_validated(tmp_path: Path) -> None:
    result = run(
        [
            "plan",
            "-i",
            str(REGULAR24),
            "--judge",
            "mock_panel",
            "--set",
            "PANEL_DOUBLE_SHARE=1.5",
        ]
    )
    assert result.exit_code == 2
    assert "PANEL_DOUBLE_SHARE" in result.output and "Traceback" not in result.output
    profile = tmp_path / "bad.yaml"
    profile.write_text("kind: mock\nname: single\ndouble_share: 0.2\n", encoding="utf-8")
    result = run(["plan", "-i", str(REGULAR24), "--judge", str(profile)])
    assert result.exit_code == 2
    assert "double_share needs a panel" in result.output


def test_plan_shows_the_second_asks_and_the_profile_key_is_used(tmp_path: Path) -> None:
    profile = tmp_path / "panel.yaml"
    profile.write_text(
        "kind: mock\nname: p\ndouble_share: 0.25\npanel:\n  - judge: mock_default\n"
        "  - judge: {kind: mock, name: other, noise: 2.0}\n",
        encoding="utf-8",
    )
    args = ["plan", "-i", str(REGULAR24), "--judge", str(profile), "--max-comparisons", "250"]
    plan = json.loads(run([*args, "--format", "json"]).stdout)
    assert plan["panel_double_share"] == 0.25
    assert plan["estimated_double_asks"] == 50  # 250 * 0.25 / 1.25
    assert plan["estimated_calls"] == 250  # the budget holds them: no call beyond it
    overridden = json.loads(
        run([*args, "--format", "json", "--set", "PANEL_DOUBLE_SHARE=0"]).stdout
    )
    assert overridden["estimated_double_asks"] == 0
    table = run(args).output
    assert "pairs asked of two judges" in table
    assert "about 50 of" in table and "the 250 calls" in table


def test_dry_run_shows_each_prompt_with_its_judge(tmp_path: Path) -> None:
    args = ["-i", str(REGULAR24), "--judge", "mock_panel", "--seed", "3"]
    sets = ["--set", "PANEL_DOUBLE_SHARE=0.2"]
    result = run(["dry-run", *args, *sets, "-o", str(tmp_path / "env")])
    assert result.exit_code == 0, result.output
    envelope = json.loads((tmp_path / "env" / "envelope.json").read_text(encoding="utf-8"))
    assert [m["judge"] for m in envelope["panel"]] == list(JUDGES)
    planned = [(p["essay_a"], p["essay_b"], p["judge"]) for p in envelope["first_wave"]]
    assert len(planned) == 12
    db = tmp_path / "cj.db"
    _execute(db, "--seed", "3", *sets, budget=12)
    asked = query(
        db,
        "SELECT a.essay_id, b.essay_id, c.judge FROM comparisons c "
        "JOIN nodes a ON a.batch_id = c.batch_id AND a.idx = c.a_idx "
        "JOIN nodes b ON b.batch_id = c.batch_id AND b.idx = c.b_idx "
        "WHERE c.wave = 1 ORDER BY c.slot",
    )
    assert [tuple(r) for r in asked] == planned


PANEL_JUDGE: dict[str, Any] = {
    "kind": "mock",
    "name": "resumed-panel",
    "seed": 21,
    "panel": [
        {
            "judge": {
                "kind": "mock",
                "name": name,
                "seed": 21,
                "noise": noise,
                "latency": {"distribution": "fixed", "median_ms": 1},
                "errors": {"timeout": 0.05, "server_error": 0.03},
            }
        }
        for name, noise in (("one", 0.8), ("two", 1.2), ("three", 1.0))
    ],
}


async def _panel_answers(store: Any, batch_id: str) -> Counter[tuple[Any, ...]]:
    """``(a, b, mode, wave, judge, winner)`` of every answered comparison."""
    rows = await repo_attempts(store, batch_id)
    return Counter(
        (r["a_idx"], r["b_idx"], r["mode"], r["wave"], r["judge"], r["winner"])
        for r in rows
        if r["status"] == "success"
    )


async def repo_attempts(store: Any, batch_id: str) -> list[dict[str, Any]]:
    from cj_runner.storage import repository as repo

    return await repo.load_attempts(store, batch_id)


@pytest.mark.parametrize("crash", ["calls in flight", "wave planned, nothing sent"])
async def test_a_resumed_panel_batch_asks_what_an_uninterrupted_one_asks(
    db_url: str, tmp_path: Path, crash: str
) -> None:
    """A crash mid-batch, then a resume: the same pairs, second asks and judges as a run
    that never stopped (the resume counts the stored second asks to go on round the pairs
    of judges)."""
    from cj_runner.storage import open_store, resolve_db_url
    from tests.cli.helpers import write_profile
    from tests.cli.test_resume import (
        SETTINGS,
        Crash,
        assert_consistent,
        crash_in,
        ledger,
        new_batch,
        run_batch,
        twelve_essays,
    )

    inventory = twelve_essays(tmp_path / "essays")
    # the budget (400) does not bind: calls counted as lost at the crash cost no answer
    settings = {**SETTINGS, "PANEL_DOUBLE_SHARE": 0.3}
    profile = write_profile(tmp_path / "panel.yaml", settings, PANEL_JUDGE)
    reference_store = await open_store(resolve_db_url(str(tmp_path / "reference.db")))
    try:
        reference = await new_batch(reference_store, inventory, profile, "reference")
        done = await run_batch(reference_store, reference)
        assert (done.status, done.stop_reason) == ("COMPLETED", "resampling_cap")
        expected = await _panel_answers(reference_store, reference)
    finally:
        await reference_store.close()
    assert sum(1 for key in expected.elements() if key[4] is None) == 0
    by_wave_edge = Counter((k[3], min(k[0], k[1]), max(k[0], k[1])) for k in expected.elements())
    assert sum(1 for n in by_wave_edge.values() if n == 2) >= 20  # second asks answered
    store = await open_store(resolve_db_url(db_url))
    try:
        crashed = await new_batch(store, inventory, profile, "crashed")
        how: dict[str, Any] = (
            {"crash_at_call": 23}
            if crash == "calls in flight"
            else {"executor": crash_in("_send_wave", 6)}
        )
        with pytest.raises(Crash):
            await run_batch(store, crashed, **how)
        assert_consistent(await ledger(store, crashed))
        assert (await run_batch(store, crashed)).status == "COMPLETED"
        assert await _panel_answers(store, crashed) == expected
        book = await ledger(store, crashed)
        assert_consistent(book)
        assert book["calls_sent"] <= 400
    finally:
        await store.close()

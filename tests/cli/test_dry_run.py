"""`cj-run dry-run`: the request envelope of a batch, with no judge call and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import REGULAR24, dump_tables, register_example_anchors, run


def test_dry_run_writes_the_envelope_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    register_example_anchors(db)
    before = dump_tables(db)
    out = tmp_path / "envelope"
    result = run(
        [
            "dry-run",
            "--inventory",
            str(REGULAR24),
            "--assignment-id",
            "phones",
            "--profile",
            "mock_generic_batch",
            "--db",
            str(db),
            "-o",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    assert dump_tables(db) == before
    envelope = json.loads((out / "envelope.json").read_text(encoding="utf-8"))
    assert envelope["plan"]["nodes"] == 32 and envelope["plan"]["anchors"] == 8
    assert envelope["settings"]["COMPARISONS_PER_STABILITY_CHECK_ITERATION"] == 24
    assert envelope["judge"]["kind"] == "mock"
    assert len(envelope["nodes"]) == 32
    assert sum(n["is_anchor"] for n in envelope["nodes"]) == 8
    wave = envelope["first_wave"]
    assert len(wave) == 24
    pairs = [(p["essay_a"], p["essay_b"]) for p in wave]
    first_16 = [i for pair in pairs[:16] for i in pair]
    assert len(set(first_16)) == 32  # 16 node-disjoint pairs cover all 32 nodes first
    first = wave[0]
    assert first["mode"] == "coverage" and first["wave"] == 1
    # the prompt holds the assignment's texts and both essays inside their delimiters
    instructions = (REGULAR24.parents[1] / "assignment" / "rubric.md").read_text()
    assert instructions.strip().splitlines()[0] in first["user"] + first["system"]
    assert len(envelope["prompt_hash"]) == 64


def test_dry_run_first_wave_is_what_execute_asks_first(tmp_path: Path) -> None:
    args = ["--inventory", str(REGULAR24), "--profile", "mock_lower5", "--seed", "7"]
    result = run(["dry-run", *args, "-o", str(tmp_path / "env")])
    assert result.exit_code == 0, result.output
    planned = [
        (p["essay_a"], p["essay_b"])
        for p in json.loads((tmp_path / "env" / "envelope.json").read_text())["first_wave"]
    ]
    db = tmp_path / "cj.db"
    result = run(["execute", *args, "--db", str(db), "--json", "--max-comparisons", "12"])
    assert result.exit_code == 0, result.output
    import sqlite3

    with sqlite3.connect(db) as conn:
        asked = conn.execute(
            "SELECT a.essay_id, b.essay_id FROM comparisons c "
            "JOIN nodes a ON a.batch_id = c.batch_id AND a.idx = c.a_idx "
            "JOIN nodes b ON b.batch_id = c.batch_id AND b.idx = c.b_idx "
            "WHERE c.wave = 1 ORDER BY c.slot"
        ).fetchall()
    assert [tuple(p) for p in asked] == planned

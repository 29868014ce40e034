"""Imported judgments and the judges report, through the real commands on a real SQLite
file: a mock batch, a file of teachers' judgments (one answering at random) imported with
its provenance, bad files refused with the row named and nothing stored, and every judge
on one scale in `cj-report judges`."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

from tests.cli.helpers import REGULAR24, dump_tables, query, report, run

HEADER = ["essay_a", "essay_b", "winner", "judge", "time", "room"]


def _truth() -> dict[str, float]:
    with REGULAR24.open(encoding="utf-8") as f:
        return {r["essay_id"]: float(r["true_score"]) for r in csv.DictReader(f)}


def teachers_file(path: Path, per_judge: int = 90, seed: int = 1) -> Path:
    """Judgments of three teachers drawn from the essays' true scores; teacher-3 answers
    at random."""
    truth = _truth()
    ids = sorted(truth)
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for judge in ("teacher-1", "teacher-2", "teacher-3"):
            for k in range(per_judge):
                a, b = rng.sample(ids, 2)
                p = 0.5 if judge == "teacher-3" else 1 / (1 + math.exp(-(truth[a] - truth[b])))
                winner = "A" if rng.random() < p else "B"
                writer.writerow([a, b, winner, judge, f"2025-03-14T09:{k % 60:02d}:00Z", "R1"])
    return path


@pytest.fixture(scope="module")
def batch_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("panels") / "cj.db"
    result = run(
        [
            "execute",
            "-i",
            str(REGULAR24),
            "--judge",
            "mock_default",
            "--max-comparisons",
            "200",
            "--seed",
            "7",
            "--batch-name",
            "r24",
            "--db",
            str(db),
            "-q",
        ]
    )
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def db(batch_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cj.db"
    copy.write_bytes(batch_db.read_bytes())
    return copy


def test_import_stores_every_row_with_its_provenance(db: Path, tmp_path: Path) -> None:
    path = teachers_file(tmp_path / "teachers.csv")
    result = run(["import", "r24", str(path), "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["imported"] == 270
    assert summary["judges"] == {"teacher-1": 90, "teacher-2": 90, "teacher-3": 90}
    rows = query(
        db,
        "SELECT i.source_name, i.source_row, i.source_checksum, i.judge, i.winner, "
        "na.essay_id, nb.essay_id, i.judged_at, i.metadata_json FROM imported_judgments i "
        "JOIN nodes na ON na.batch_id = i.batch_id AND na.idx = i.a_idx "
        "JOIN nodes nb ON nb.batch_id = i.batch_id AND nb.idx = i.b_idx ORDER BY i.id",
    )
    assert len(rows) == 270
    with path.open(encoding="utf-8") as f:
        first = next(iter(csv.DictReader(f)))
    name, row, digest, judge, winner, a, b, judged_at, metadata = rows[0]
    assert (name, row, judge, winner, a, b) == (
        "teachers.csv",
        2,
        "teacher-1",
        first["winner"],
        first["essay_a"],
        first["essay_b"],
    )
    assert digest == summary["sha256"] and len(digest) == 64
    assert str(judged_at).startswith("2025-03-14 09:00:00")
    assert json.loads(metadata) == {"room": "R1"}
    assert [r[1] for r in rows] == list(range(2, 272))
    # the batch's own counters are untouched: imports are not judge calls
    assert query(db, "SELECT calls_sent, successes FROM batch_state") == [(200, 200)]


def test_the_same_file_twice_is_refused(db: Path, tmp_path: Path) -> None:
    path = teachers_file(tmp_path / "teachers.csv")
    assert run(["import", "r24", str(path), "--db", str(db)]).exit_code == 0
    before = dump_tables(db)
    again = run(["import", "r24", str(path), "--db", str(db)])
    assert again.exit_code == 2
    assert "already imported into batch" in again.stderr
    assert dump_tables(db) == before


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = ["R24-01", "R24-02", "A", "teacher-1", ""]
BAD_ROWS = [
    (["R24-01", "nope", "A", "t", ""], "row 3, field 'essay_b': essay 'nope' is not in batch"),
    (["R24-01", "R24-01", "A", "t", ""], "row 3: essay_a and essay_b are the same essay"),
    (["R24-01", "R24-02", "C", "t", ""], "row 3, field 'winner': 'C' is neither A, B nor"),
    (["R24-01", "R24-02", "A", " ", ""], "row 3, field 'judge': empty"),
    (["R24-01", "R24-02", "A", "mock", ""], "row 3, field 'judge': 'mock' is a judge of batch"),
    (["R24-01", "R24-02", "A", "t", "yesterday"], "row 3, field 'time': 'yesterday' is not"),
    (["", "R24-02", "A", "t", ""], "row 3, field 'essay_a': empty"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_a_bad_row_refuses_the_whole_file(
    db: Path, tmp_path: Path, row: list[str], message: str
) -> None:
    path = _write(tmp_path / "bad.csv", HEADER[:5], [GOOD, row, GOOD])
    before = dump_tables(db)
    result = run(["import", "r24", str(path), "--db", str(db)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert line.startswith(f"error: {path}"), line
    assert message in line, line
    assert dump_tables(db) == before


def test_bad_files_are_refused(db: Path, tmp_path: Path) -> None:
    before = dump_tables(db)
    cases = [
        (_write(tmp_path / "a.csv", ["essay_a", "essay_b", "judge"], [["x", "y", "z"]]),
         "row 1: missing column 'winner'"),
        (_write(tmp_path / "b.csv", HEADER[:4], []), "no judgments (only a header)"),
        (tmp_path / "missing.csv", "file not found"),
    ]  # fmt: skip
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"essay_a,essay_b,winner,judge\nR24-01,R24-02,A,J\xe9\n")
    cases.append((latin, "not valid UTF-8"))
    for path, message in cases:
        result = run(["import", "r24", str(path), "--db", str(db)])
        assert result.exit_code == 2, result.output
        assert message in result.stderr, result.stderr
    unknown = run(["import", "nope", str(cases[0][0]), "--db", str(db)])
    assert unknown.exit_code == 2
    assert dump_tables(db) == before


def test_winner_may_name_the_essay(db: Path, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "w.csv",
        HEADER[:4],
        [["R24-01", "R24-02", "R24-02", "j"], ["R24-03", "R24-04", "b", "j"]],
    )
    assert run(["import", "r24", str(path), "--db", str(db)]).exit_code == 0
    assert query(db, "SELECT winner FROM imported_judgments ORDER BY id") == [("B",), ("B",)]


def test_judges_report_puts_every_judge_on_one_scale(db: Path, tmp_path: Path) -> None:
    path = teachers_file(tmp_path / "teachers.csv")
    assert run(["import", "r24", str(path), "--db", str(db)]).exit_code == 0
    result = report(["judges", "r24", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {j["judge"]: j for j in data["judges"]}
    assert list(by_name) == ["mock", "teacher-1", "teacher-2", "teacher-3"]
    assert by_name["mock"]["source"] == "batch" and by_name["mock"]["comparisons"] == 200
    assert by_name["teacher-1"]["source"] == "imported"
    assert [n for n, j in by_name.items() if j["flagged"]] == ["teacher-3"]
    assert by_name["teacher-3"]["agreement"] < by_name["teacher-1"]["agreement"]
    assert data["reliability"]["flagged"] == ["teacher-3"]
    assert data["reliability"]["judge_weights"]["teacher-3"] == 0
    # one scale: the essays' panel scores follow the true scores
    truth = _truth()
    scores = {s["essay_id"]: s["score"] for s in data["scores"]}
    ordered = sorted(truth, key=truth.get)  # type: ignore[arg-type]
    top, bottom = ordered[-5:], ordered[:5]
    assert min(scores[e] for e in top) > max(scores[e] for e in bottom)
    pairs = {(k["judge_a"], k["judge_b"]) for k in data["kappa"]}
    assert ("mock", "teacher-1") in pairs

    csv_out = report(["judges", "r24", "--db", str(db), "--format", "csv"])
    assert csv_out.exit_code == 0
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0].startswith("judge,source,comparisons,order_effect")
    assert len(lines) == 5
    table = report(["judges", "r24", "--db", str(db)])
    assert table.exit_code == 0
    assert "teacher-3" in table.stdout and "misfitting" in table.stdout

    down = report(["judges", "r24", "--db", str(db), "-f", "json", "--misfit", "downweight"])
    weight = json.loads(down.stdout)["reliability"]["judge_weights"]["teacher-3"]
    assert 0 < weight < 1
    bad = report(["judges", "r24", "--db", str(db), "--misfit", "drop"])
    assert bad.exit_code == 2 and "--misfit" in bad.stderr


def test_a_single_judge_batch_gets_a_one_judge_report(db: Path) -> None:
    result = report(["judges", "r24", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [j["judge"] for j in data["judges"]] == ["mock"]
    assert not data["judges"][0]["flagged"]
    assert data["kappa"] == []
    assert any("nothing is flagged" in n for n in data["notes"])


# With the default second asks (PANEL_DOUBLE_SHARE 0.1) seeds 1..20 flag the erratic
# judge in 19 batches (`python benchmarks/bench_panels.py --batches 20 --only-batches`):
# seed 2 is the one miss, so two of the others are checked here.
@pytest.mark.parametrize("seed", [1, 3])
def test_a_mock_panel_batch_flags_its_erratic_judge(tmp_path: Path, seed: int) -> None:
    db = tmp_path / "panel.db"
    args = ["execute", "-i", str(REGULAR24), "--judge", "mock_panel", "--max-comparisons"]
    args += ["240", "--seed", str(seed), "--batch-name", "pan", "--db", str(db), "-q"]
    assert run(args).exit_code == 0
    data = json.loads(report(["judges", "pan", "--db", str(db), "-f", "json"]).stdout)
    counts = {j["judge"]: j["comparisons"] for j in data["judges"]}
    assert list(counts) == ["steady", "biased", "erratic"]
    assert sum(counts.values()) == 240
    assert all(50 <= c <= 110 for c in counts.values()), counts
    assert [j["judge"] for j in data["judges"] if j["flagged"]] == ["erratic"]
    # every comparison names the judge that answered, in the export too
    rows = list(
        csv.DictReader(
            report(["comparisons", "pan", "--db", str(db), "--successful"]).stdout.splitlines()
        )
    )
    assert {r["judge"]: 0 for r in rows}.keys() == counts.keys()
    for name, count in counts.items():
        assert sum(r["judge"] == name for r in rows) == count
    assert {r["model"] for r in rows} == {"mock-steady", "mock-biased", "mock-erratic"}


def test_the_html_report_has_a_judges_section_only_with_several_judges(
    db: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single.html"
    assert report(["html", "r24", "--db", str(db), "-o", str(single)]).exit_code == 0
    assert 'id="judges"' not in single.read_text(encoding="utf-8")
    path = teachers_file(tmp_path / "teachers.csv")
    assert run(["import", "r24", str(path), "--db", str(db)]).exit_code == 0
    page = tmp_path / "panel.html"
    assert report(["html", "r24", "--db", str(db), "-o", str(page)]).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert '<section id="judges">' in text and 'href="#judges"' in text
    section = text.split('<section id="judges">')[1].split("</section>")[0]
    assert "judges-table" in section and "kappa-table" in section
    assert "teacher-3" in section and "misfitting</th><td>teacher-3" in section


def test_repeated_judge_options_make_a_panel(tmp_path: Path) -> None:
    db = tmp_path / "rep.db"
    args = ["execute", "-i", str(REGULAR24), "--judge", "mock_default:0.8", "--judge"]
    args += ["mock_server:0.2", "--max-comparisons", "150", "--seed", "4", "--db", str(db)]
    assert run([*args, "--batch-name", "rep", "-q"]).exit_code == 0
    assert query(db, "SELECT judge_name FROM batches") == [("panel:mock_default+mock_server",)]
    data = json.loads(report(["judges", "rep", "--db", str(db), "-f", "json"]).stdout)
    counts = {j["judge"]: j["comparisons"] for j in data["judges"]}
    assert list(counts) == ["mock", "mock-server"]
    # mock_server fails a few calls on purpose: successes only
    assert 140 <= sum(counts.values()) <= 150 and 10 <= counts["mock-server"] <= 50
    bad = run(
        ["plan", "-i", str(REGULAR24), "--judge", "mock_default:-1", "--judge", "mock_server"]
    )
    assert bad.exit_code == 2 and "share" in bad.stderr
    one = run(["plan", "-i", str(REGULAR24), "--judge", "mock_default:1"])
    assert one.exit_code == 2 and "at least two judges" in one.stderr


def test_a_new_batch_over_an_inventory_from_imports(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    path = teachers_file(tmp_path / "teachers.csv")
    args = ["import", "hum", str(path), "--inventory", str(REGULAR24), "--db", str(db)]
    result = run([*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["new_batch"] is True and summary["imported"] == 270
    assert query(db, "SELECT name, status FROM batches") == [("hum", "CREATED")]
    assert query(db, "SELECT count(*) FROM nodes") == [(24,)]
    assert query(db, "SELECT count(*) FROM comparisons") == [(0,)]
    data = json.loads(report(["judges", "hum", "--db", str(db), "-f", "json"]).stdout)
    assert [j["judge"] for j in data["judges"] if j["flagged"]] == ["teacher-3"]
    # the same name again is refused, and so are new-batch options without --inventory
    before = dump_tables(db)
    again = run(args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    stray = run(["import", "hum", str(path), "--profile", "x", "--db", str(db)])
    assert stray.exit_code == 2 and "go with --inventory" in stray.stderr
    assert dump_tables(db) == before
    # the batch's judge can add its comparisons later, on the same scale
    assert run(["resume", "hum", "--max-comparisons", "60", "--db", str(db), "-q"]).exit_code == 0
    data = json.loads(report(["judges", "hum", "--db", str(db), "-f", "json"]).stdout)
    assert [j["judge"] for j in data["judges"]] == ["mock", "teacher-1", "teacher-2", "teacher-3"]


def test_a_bad_file_creates_no_batch(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    path = _write(tmp_path / "bad.csv", HEADER[:4], [["R24-01", "nope", "A", "t"]])
    args = ["import", "hum", str(path), "--inventory", str(REGULAR24), "--db", str(db)]
    result = run(args)
    assert result.exit_code == 2 and "essay 'nope' is not in the inventory" in result.stderr
    assert not db.exists() or query(db, "SELECT count(*) FROM batches") == [(0,)]


def test_a_batch_too_large_for_the_common_scale_says_so(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cj_runner.services import panels

    monkeypatch.setattr(panels, "PANEL_MAX_NODES", 10)
    result = report(["judges", "r24", "--db", str(db), "-f", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["judges"] == [] and "at most 10 essays" in data["notes"][0]

"""The extended bad-input matrix (issue 7 item 5) through the real CLI.

Refused inputs: one line ``error: ...`` naming the file, row or field, exit code 2, no
traceback, and a database that is byte-for-byte the same in every table (it already holds
anchors and a finished batch, so there is something to damage). Accepted inputs: a
10,000-essay inventory plans quickly, a 1 MB essay runs, duplicate texts give a warning,
and ids with spaces and any script run end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.inputs import MAX_ESSAY_BYTES
from tests.cli.helpers import (
    ANCHORS,
    LOWER5,
    anchors,
    dump_tables,
    query,
    register_example_anchors,
    report,
    run,
)

GOOD = "Phones in school help students look things up, but they also distract them. "


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with an assignment, its anchors and one finished batch (built once)."""
    path = tmp_path_factory.mktemp("template") / "cj.db"
    register_example_anchors(path)
    done = run(["execute", "-i", str(LOWER5), "--profile", "mock_lower5", "--db", str(path), "-q"])
    assert done.exit_code == 0, done.output
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    """A copy of the template database for one test."""
    path = tmp_path / "cj.db"
    for suffix in ("", "-wal", "-shm"):
        source = template_db.with_name(template_db.name + suffix)
        if source.exists():
            shutil.copyfile(source, path.with_name(path.name + suffix))
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def essays_folder(folder: Path, files: dict[str, bytes | str]) -> Path:
    write(folder / "good-1.txt", GOOD * 3)
    write(folder / "good-2.txt", GOOD * 4 + "Still, rules help.")
    for name, data in files.items():
        write(folder / name, data)
    return folder


def yaml_file(path: Path, data: Any) -> Path:
    return write(path, yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def refused(db: Path, app: str, args: list[str], *needles: str) -> str:
    """Run a command that must be refused; check the contract; return the message."""
    before = dump_tables(db)
    call = {"run": run, "anchors": anchors, "report": report}[app]
    result = call([*args, "--db", str(db)])
    message = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in message, message
    assert dump_tables(db) == before, "a refused command changed the database"
    return message


# ---------------------------------------------------------------- refused


def test_nul_bytes_in_an_essay_file(db: Path, tmp_path: Path) -> None:
    folder = essays_folder(tmp_path / "inv", {"nul.txt": b"An essay\x00 with a NUL byte."})
    refused(db, "run", ["execute", "-i", str(folder)], "nul.txt", "NUL byte at byte 8")


def test_nul_bytes_in_a_manifest(db: Path, tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.csv", f"essay_id,text\ne1,{GOOD}\ne2,bad\x00text\n".encode())
    refused(db, "run", ["execute", "-i", str(manifest)], "m.csv", "NUL byte", "line 3")


def test_invalid_utf8_in_an_essay_file(db: Path, tmp_path: Path) -> None:
    folder = essays_folder(tmp_path / "inv", {"latin1.txt": "Smörgåsbord".encode("latin-1")})
    refused(db, "run", ["execute", "-i", str(folder)], "latin1.txt", "not valid UTF-8 at byte 2")


def test_invalid_utf8_in_a_manifest(db: Path, tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.jsonl", b'{"essay_id": "e1", "text": "ok"}\n{"essay_id": "\xff"}\n'
    )
    refused(db, "run", ["execute", "-i", str(manifest)], "m.jsonl", "UTF-8", "line 2")


def test_invalid_utf8_in_an_anchor(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "anchors"
    write(folder / "a.txt", GOOD)
    write(folder / "b.txt", b"\xc3\x28 broken")
    write(folder / "anchors.csv", "file,grade\na.txt,A\nb.txt,F\n")
    args = ["register", str(folder), "--assignment-id", "new", "--grade-scale", "eng5"]
    refused(db, "anchors", args, "anchors.csv", "row 3", "field 'file'", "UTF-8")


def test_an_essay_above_the_size_limit(db: Path, tmp_path: Path) -> None:
    big = ("x" * 99 + "\n") * (MAX_ESSAY_BYTES // 100 + 1)
    folder = essays_folder(tmp_path / "inv", {"huge.txt": big})
    refused(db, "run", ["execute", "-i", str(folder)], "huge.txt", f"{MAX_ESSAY_BYTES:,}")


@pytest.mark.parametrize("where", ["../secret.txt", "sub/../../secret.txt", "/etc/hostname"])
def test_a_manifest_path_outside_its_folder(db: Path, tmp_path: Path, where: str) -> None:
    write(tmp_path / "secret.txt", GOOD)  # exists: refused for where it is, not for missing
    manifest = write(tmp_path / "inv" / "manifest.csv", f"essay_id,path\ne1,e1.txt\ne2,{where}\n")
    write(tmp_path / "inv" / "e1.txt", GOOD)
    refused(
        db,
        "run",
        ["execute", "-i", str(manifest)],
        "manifest.csv row 3",
        "field 'path'",
        "outside the manifest's folder",
    )


def test_an_anchor_path_outside_its_folder(db: Path, tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", GOOD)
    folder = tmp_path / "anchors"
    write(folder / "a.txt", GOOD)
    write(folder / "anchors.csv", "file,grade\na.txt,A\n../secret.txt,F\n")
    args = ["register", str(folder), "--assignment-id", "new", "--grade-scale", "eng5"]
    refused(db, "anchors", args, "anchors.csv row 3", "outside the manifest's folder")


@pytest.mark.parametrize(
    ("scales", "needle"),
    [
        ("dup:\n  grades: [F, E, E, A]\n", "duplicate grade 'E'"),
        ("dup:\n  grades: [F, A]\ndup:\n  grades: [1, 2]\n", "duplicate key 'dup' (lines 1 and 3)"),
        ("dup:\n  grades: [F, E]\n  grades: [D, C]\n", "duplicate key 'grades'"),
    ],
    ids=["grade twice", "scale twice", "key twice"],
)
def test_a_grade_scale_file_with_duplicates(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scales: str, needle: str
) -> None:
    profiles = tmp_path / "profiles"
    write(profiles / "grade_scales.yaml", scales)
    monkeypatch.setenv("CJ_PROFILES_DIR", str(profiles))
    args = ["register", str(ANCHORS), "--assignment-id", "new", "--grade-scale", "dup"]
    refused(db, "anchors", args, "grade_scales.yaml", needle)


@pytest.mark.parametrize(
    ("option", "profile", "needle"),
    [
        ("--profile", {"name": "p", "setings": {"SEED": 1}}, "unknown top-level key 'setings'"),
        (
            "--profile",
            {"name": "p", "settings": {"MAX_PAIRWISE_COMPARISON": 10}},
            "unknown setting 'MAX_PAIRWISE_COMPARISON'",
        ),
        (
            "--profile",
            {"name": "p", "judge": {"kind": "mock", "latnecy": {"distribution": "zero"}}},
            "unknown field 'latnecy'",
        ),
        ("--judge", {"kind": "mock", "temprature": 0.2}, "unknown field 'temprature'"),
        (
            "--judge",
            {"kind": "mock", "errors": {"timeout": 0.1, "teapot": 0.1}},
            "unknown field 'errors.teapot'",
        ),
    ],
    ids=["top-level key", "setting", "judge section key", "judge profile key", "nested key"],
)
def test_a_profile_with_unknown_keys(
    db: Path, tmp_path: Path, option: str, profile: dict[str, Any], needle: str
) -> None:
    path = yaml_file(tmp_path / "bad.yaml", profile)
    refused(db, "run", ["execute", "-i", str(LOWER5), option, str(path)], "bad.yaml", needle)


def test_ids_that_are_the_same_after_unicode_normalisation(db: Path, tmp_path: Path) -> None:
    composed, decomposed = "Zoë", unicodedata.normalize("NFD", "Zoë")
    assert composed != decomposed
    manifest = tmp_path / "ids.jsonl"
    rows = [{"essay_id": composed, "text": GOOD}, {"essay_id": decomposed, "text": GOOD + "!"}]
    write(manifest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    refused(db, "run", ["execute", "-i", str(manifest)], "duplicate essay id 'Zoë'", "line 2")


def test_refusal_is_one_line_without_traceback_in_a_real_process(db: Path, tmp_path: Path) -> None:
    folder = essays_folder(tmp_path / "inv", {"nul.txt": b"\x00"})
    before = dump_tables(db)
    out = subprocess.run(
        [str(Path(sys.executable).with_name("cj-run")), "execute", "-i", str(folder),
         "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "nul.txt" in out.stderr and "Traceback" not in out.stderr
    assert dump_tables(db) == before


# ---------------------------------------------------------------- refused: issue 11


@pytest.mark.parametrize(
    "args",
    [
        ["--max-comparisons", "99999999999999999999"],
        ["--set", "MAX_PAIRWISE_COMPARISONS=9223372036854775808"],
        ["--set", "SEED=-99999999999999999999999"],
    ],
    ids=["flag", "--set", "negative"],
)
def test_integers_beyond_64_bits(db: Path, args: list[str]) -> None:
    refused(db, "run", ["execute", "-i", str(LOWER5), *args], "9223372036854775808")


def test_a_database_of_a_newer_schema(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    for args in (["list"], ["execute", "-i", str(LOWER5)]):
        refused(db, "run", args, "newer cj-runner", "0099_from_the_future", "knows revisions up to")
    refused(db, "report", ["summary", "x"], "newer cj-runner")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_database(db: Path) -> None:
    db.chmod(0o444)
    refused(db, "run", ["execute", "-i", str(LOWER5)], "read-only")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://cj@127.0.0.1:1/cj", "cannot connect to database"),
        ("postgresql://cj@no-such-host.invalid/cj", "cannot connect to database"),
        ("postgresql://cj@127.0.0.1:1/cj?sslmode=bogus", "sslmode"),
    ],
    ids=["refused", "unknown host", "bad sslmode"],
)
def test_a_postgresql_server_that_cannot_be_reached(url: str, needle: str) -> None:
    for call, args in ((run, ["list"]), (report, ["summary", "x"])):
        result = call([*args, "--db", url])
        message = result.stderr.strip()
        assert result.exit_code == 2, result.output
        assert message.startswith("error: ") and "\n" not in message and needle in message
        assert "Traceback" not in result.output


@pytest.mark.parametrize("where", ["missing/out.txt", "a-folder", "/dev/full"])
def test_an_output_that_cannot_be_written(db: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "a-folder").mkdir()
    target = where if where.startswith("/") else str(tmp_path / where)
    if where == "/dev/full" and not Path(where).exists():
        pytest.skip("no /dev/full")
    ((batch,),) = query(db, "SELECT id FROM batches")
    for args in (
        ["summary", batch, "-o", target],
        ["ranking", batch, "--format", "csv", "-o", target],
        ["html", batch, "-o", target],
    ):
        refused(db, "report", args, f"--output {target}: cannot write the file")
    # dry-run creates a missing folder; a file where its folder should be is refused
    not_a_folder = target if where == "/dev/full" else str(write(tmp_path / "file", "x"))
    refused(db, "run", ["dry-run", "-i", str(LOWER5), "-o", not_a_folder], "--output-dir")


def test_a_batch_name_longer_than_the_store_keeps(db: Path) -> None:
    name = "n" * 201
    refused(db, "run", ["execute", "-i", str(LOWER5), "--batch-name", name], "at most 200")


def test_an_api_key_an_http_header_cannot_carry(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ODD_KEY", "sk-ключ-123")
    judge = {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"}
    path = yaml_file(tmp_path / "j.yaml", {**judge, "api_key_env": "ODD_KEY"})
    message = refused(db, "run", ["execute", "-i", str(LOWER5), "--judge", str(path)], "ODD_KEY")
    assert "ключ" not in message


def test_db_pointing_at_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    for args in (["list"], ["execute", "-i", str(LOWER5)]):
        result = run([*args, "--db", str(folder)])
        assert result.exit_code == 2 and "is a folder" in result.stderr, result.output
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("kind", ["text file", "other SQLite database"])
def test_a_file_that_is_not_a_cj_runner_database_is_refused(tmp_path: Path, kind: str) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    if kind == "text file":
        path.write_text("notes, not a database\n", encoding="utf-8")
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (x TEXT)")
    before = path.read_bytes()
    commands = [
        (run, ["list"]),
        (run, ["plan", "-i", str(LOWER5), "--assignment-id", "a"]),
        (run, ["execute", "-i", str(LOWER5)]),
        (run, ["resume", "x"]),
        (report, ["summary", "x"]),
        (anchors, ["list", "--assignment-id", "a"]),
    ]
    for call, args in commands:
        result = call([*args, "--db", str(path)])
        message = result.stderr.strip()
        assert result.exit_code == 2, (args, result.output)
        assert message.startswith("error: ") and "\n" not in message
        assert "not a" in message and str(path) in message, message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_a_symlink_out_of_the_inventory_folder(db: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.txt", GOOD)
    folder = essays_folder(tmp_path / "inv", {})
    (folder / "link.txt").symlink_to(outside)
    refused(db, "run", ["execute", "-i", str(folder)], "link.txt", "outside the folder")
    manifest = write(folder / "m.csv", "essay_id,path\ne1,good-1.txt\ne2,link.txt\n")
    refused(db, "run", ["execute", "-i", str(manifest)], "m.csv row 3", "link.txt", "outside")


@pytest.mark.parametrize(
    ("judge", "needle"),
    [
        ({"base_url": "http://127.0.0.1:99999/v1"}, "invalid port"),
        ({"base_url": "http://127.0.0.1:8080/v1\r\nX-Evil: 1"}, "control characters"),
        ({"base_url": "http:///v1"}, "no host"),
        ({"base_url": "ftp://127.0.0.1/v1"}, "http:// or https://"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
    ids=["port", "CR/LF", "no host", "scheme", "timeout inf", "timeout nan", "timeout 0"],
)
def test_a_judge_profile_with_a_bad_url_or_timeout(
    db: Path, tmp_path: Path, judge: dict[str, Any], needle: str
) -> None:
    profile = {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", **judge}
    path = yaml_file(tmp_path / "j.yaml", profile)
    refused(db, "run", ["execute", "-i", str(LOWER5), "--judge", str(path)], needle)


def test_a_bad_judge_base_url_flag(db: Path) -> None:
    args = ["execute", "-i", str(LOWER5), "--judge", "openai", "--judge-base-url"]
    refused(db, "run", [*args, "http://127.0.0.1:99999"], "invalid port")
    refused(db, "run", [*args, "http://a b"], "control characters")


# ---------------------------------------------------------------- accepted


def test_an_inventory_of_10000_essays_plans(db: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "big.jsonl"
    with manifest.open("w", encoding="utf-8") as out:
        for i in range(10_000):
            words = " ".join(f"w{(i * 7 + j) % 997}" for j in range(100))
            out.write(json.dumps({"essay_id": f"S{i:05d}", "text": f"Essay {i}. {words}"}) + "\n")
    before = dump_tables(db)
    result = run(["plan", "-i", str(manifest), "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["students"] == plan["nodes"] == 10_000
    assert plan["max_possible_pairs"] == 10_000 * 9_999 // 2
    assert plan["warnings"] == []
    assert dump_tables(db) == before  # plan writes nothing


def test_an_essay_of_one_megabyte_is_accepted_and_stored_whole(db: Path, tmp_path: Path) -> None:
    line = "This sentence is part of a very long essay about phones in schools. " * 10
    text = (line.strip() + "\n") * (1_048_576 // (len(line)) + 1)
    text = text[:1_048_576].strip()
    folder = essays_folder(tmp_path / "inv", {"long.txt": text})
    result = run(
        ["execute", "-i", str(folder), "--max-comparisons", "6", "--db", str(db), "--json",
         "--set", "USE_ANCHORS=false"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "COMPLETED"
    import sqlite3

    with sqlite3.connect(db) as conn:
        lengths = [r[0] for r in conn.execute("SELECT length(text) FROM texts")]
    assert len(text) in lengths and len(text) > 1_000_000


def test_duplicate_texts_under_different_ids_give_a_warning(db: Path, tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "dup.csv", f'essay_id,text\nfirst,"{GOOD}"\nsecond,"{GOOD}"\nthird,"{GOOD}!"\n'
    )
    as_json = run(["plan", "-i", str(manifest), "--format", "json", "--db", str(db)])
    assert as_json.exit_code == 0, as_json.output
    (warning,) = json.loads(as_json.stdout)["warnings"]
    assert "'first', 'second' have the same text" in warning
    table = run(["plan", "-i", str(manifest), "--db", str(db)])
    assert table.exit_code == 0 and "have the same text" in table.stdout


def test_execute_shows_the_duplicate_text_warning(db: Path, tmp_path: Path) -> None:
    manifest = write(tmp_path / "dup.csv", f'essay_id,text\nfirst,"{GOOD}"\nsecond,"{GOOD}"\n')
    result = run(["execute", "-i", str(manifest), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert "have the same text" in result.stderr


def test_ids_with_spaces_and_any_script_work_end_to_end(db: Path, tmp_path: Path) -> None:
    ids = ["Anna Müller", "学生 01", "O'Brien, Jr.", "Ωμέγα-7", "  padded id  ", "emoji 📝"]
    manifest = tmp_path / "ids.jsonl"
    rows = [
        {"essay_id": essay_id, "text": f"{GOOD} Essay number {i}. " * (i + 1)}
        for i, essay_id in enumerate(ids)
    ]
    write(manifest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = run(["execute", "-i", str(manifest), "--db", str(db), "--json",
                  "--batch-name", "unicode ids", "--max-comparisons", "30"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "COMPLETED"
    ranking = report(["ranking", "unicode ids", "--format", "json", "--db", str(db)])
    assert ranking.exit_code == 0, ranking.output
    found = {r["essay_id"] for r in json.loads(ranking.stdout)["rows"]}
    assert found == {i.strip() for i in ids}


def test_ids_that_look_like_formulas_or_mathtext(db: Path, tmp_path: Path) -> None:
    """CSV cells that a spreadsheet would run get a leading ' (numbers stay numbers); an
    id that matplotlib would read as mathtext is drawn as text in the HTML report."""
    ids = ["=cmd|' /C calc'!A0", "@SUM(1)", "+1", "-2", "$\\notacommand{$", "plain"]
    manifest = tmp_path / "ids.jsonl"
    rows = [{"essay_id": i, "text": f"{GOOD} Essay {n}. " * (n + 1)} for n, i in enumerate(ids)]
    write(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    result = run(["execute", "-i", str(manifest), "--db", str(db), "--json",
                  "--batch-name", "odd ids", "--max-comparisons", "30"])  # fmt: skip
    assert result.exit_code == 0, result.output
    ranking = report(["ranking", "odd ids", "--format", "csv", "--db", str(db)])
    assert ranking.exit_code == 0, ranking.output
    import csv

    table = list(csv.DictReader(ranking.stdout.splitlines()))
    shown = {r["essay_id"] for r in table}
    assert shown == {"'=cmd|' /C calc'!A0", "'@SUM(1)", "'+1", "'-2", "$\\notacommand{$", "plain"}
    scores = [float(r["score"]) for r in table]  # numbers, negative ones included
    assert min(scores) < 0
    html = report(["html", "odd ids", "--db", str(db), "-o", str(tmp_path / "r.html")])
    assert html.exit_code == 0, html.output

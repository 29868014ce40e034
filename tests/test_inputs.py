"""Essay inventories, anchor manifests and text files (spec §2; issue 2 item 3, issue 7 item 5)."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest

from cj_runner.core.models import GradeScale
from cj_runner.errors import InputError, UserError
from cj_runner.inputs import (
    MAX_ESSAY_BYTES,
    AnchorInput,
    Inventory,
    checksum,
    load_anchor_manifest,
    load_inventory,
    read_essay_text,
    read_optional_text,
)

ENG5 = GradeScale("eng5", ("F", "E", "D", "C", "B", "A"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def refused(excinfo: pytest.ExceptionInfo[InputError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert isinstance(excinfo.value, UserError) and excinfo.value.exit_code == 2
    return message


# --------------------------------------------------------------------------- texts


def test_checksum_is_sha256_of_utf8() -> None:
    assert checksum("Åsa") == hashlib.sha256("Åsa".encode()).hexdigest()


def test_text_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf  First line\r\nsecond\rthird\n\n")
    assert read_essay_text(path) == "First line\nsecond\nthird"


def test_one_megabyte_essay_is_accepted(tmp_path: Path) -> None:
    text = ("word " * 210_000)[: 1024 * 1024 - 1] + "."
    path = write(tmp_path / "big.txt", text)
    assert path.stat().st_size == 1024 * 1024
    assert len(read_essay_text(path)) == 1024 * 1024


def test_oversized_essay_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "huge.txt", "x" * (MAX_ESSAY_BYTES + 10_000))
    with pytest.raises(InputError) as excinfo:
        read_essay_text(path)
    message = refused(excinfo)
    assert message.startswith(f"{path}: is ") and f"at most {MAX_ESSAY_BYTES:,}" in message


def test_nul_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nul.txt"
    path.write_bytes(b"hello\x00world")
    with pytest.raises(InputError) as excinfo:
        read_essay_text(path)
    assert refused(excinfo) == f"{path}: contains a NUL byte at byte 5 (a binary file?)"


def test_invalid_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(InputError) as excinfo:
        read_essay_text(path)
    assert refused(excinfo) == f"{path}: not valid UTF-8 at byte 3"


def test_invalid_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\xff")
    with pytest.raises(InputError, match=r"not valid UTF-8 at byte 5$"):
        read_essay_text(path)


@pytest.mark.parametrize("content", [b"", b"  \n\t\r\n ", b"\xef\xbb\xbf\n"])
def test_empty_essay_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(InputError) as excinfo:
        read_essay_text(path)
    assert refused(excinfo) == f"{path}: the essay is empty"


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_essay_text(tmp_path / "nope.txt")
    assert refused(excinfo) == f"{tmp_path / 'nope.txt'}: file not found"
    with pytest.raises(InputError) as excinfo:
        read_essay_text(tmp_path)
    assert refused(excinfo) == f"{tmp_path}: is a folder, not a file"


def test_optional_texts(tmp_path: Path) -> None:
    assert read_optional_text(None) == ""
    path = write(tmp_path / "rubric.md", "# Rubric\r\n\r\nBe fair.\n")
    assert read_optional_text(path) == "# Rubric\n\nBe fair."
    empty = write(tmp_path / "prompt.txt", "\n")
    with pytest.raises(InputError) as excinfo:
        read_optional_text(empty)
    assert refused(excinfo) == f"{empty}: the essay is empty"


# --------------------------------------------------------------------------- folder


def test_folder_inventory(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    write(folder / "b.txt", "Essay B")
    write(folder / "a.md", "Essay A")
    write(folder / "notes.pdf", "ignored")
    write(folder / ".hidden.txt", "ignored")
    write(folder / "._a.txt", "ignored")
    (folder / "sub.txt").mkdir()
    write(folder / "manifest.csv", "essay_id,text\nx,y\n")
    inventory = load_inventory(folder)
    assert isinstance(inventory, Inventory) and inventory.source == folder
    assert [e.essay_id for e in inventory.essays] == ["a", "b"]
    assert inventory.essays[0].text == "Essay A"
    assert inventory.essays[0].checksum == checksum("Essay A")
    assert inventory.essays[0].metadata == {}
    assert len(inventory.warnings) == 2 and "manifest.csv is ignored" in inventory.warnings[0]
    assert inventory.warnings[1].endswith("skipped 1 file(s) that are not .txt or .md: notes.pdf")


def test_folder_ids_with_spaces_and_unicode(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    nfd = unicodedata.normalize("NFD", "Åsa Öberg")
    write(folder / f"{nfd}.txt", "Hej")
    write(folder / "学生 7.md", "你好")
    ids = {e.essay_id for e in load_inventory(folder).essays}
    assert ids == {"Åsa Öberg", "学生 7"}  # NFC, as typed on most keyboards


def test_folder_without_essays(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    write(folder / "readme.pdf", "x")
    with pytest.raises(InputError) as excinfo:
        load_inventory(folder)
    assert refused(excinfo) == f"{folder}: no .txt or .md essay files in this folder"


def test_folder_with_two_files_of_one_stem(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    write(folder / "a.txt", "one")
    write(folder / "a.md", "two")
    with pytest.raises(InputError) as excinfo:
        load_inventory(folder)
    assert refused(excinfo) == f"{folder}: a.md and a.txt have the same essay id 'a'"


def test_folder_with_a_bad_essay_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    write(folder / "a.txt", "fine")
    (folder / "b.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError) as excinfo:
        load_inventory(folder)
    assert refused(excinfo) == f"{folder / 'b.txt'}: not valid UTF-8 at byte 0"


def test_folder_of_ten_thousand_essays(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_000):
        (folder / f"s{i:05d}.txt").write_text(f"Essay number {i}.", encoding="utf-8")
    inventory = load_inventory(folder)
    assert len(inventory.essays) == 10_000
    assert inventory.essays[0].essay_id == "s00000" and inventory.warnings == ()
    assert len({e.checksum for e in inventory.essays}) == 10_000


def test_csv_of_ten_thousand_inline_essays(tmp_path: Path) -> None:
    rows = "".join(f'e{i},"Essay {i}, with a comma.",{i % 7}\n' for i in range(10_000))
    path = write(tmp_path / "many.csv", "essay_id,text,true_score\n" + rows)
    inventory = load_inventory(path)
    assert len(inventory.essays) == 10_000
    assert inventory.essays[-1].metadata == {"true_score": str(9_999 % 7)}


# --------------------------------------------------------------------------- CSV


def test_csv_manifest_with_text_path_and_metadata(tmp_path: Path) -> None:
    write(tmp_path / "texts" / "b.txt", "Essay B\n")
    path = write(
        tmp_path / "essays.csv",
        "\ufeffessay_id,text,path,true_score,class\n"
        ' a ,"Essay A, inline",,1.5,9A\n'
        "b,,texts/b.txt,-0.5,9B\n"
        'Élève 3,"two\nlines",,0,9A\n',
    )
    inventory = load_inventory(path)
    assert [e.essay_id for e in inventory.essays] == ["a", "b", "Élève 3"]
    assert [e.text for e in inventory.essays] == ["Essay A, inline", "Essay B", "two\nlines"]
    assert inventory.essays[1].metadata == {"true_score": "-0.5", "class": "9B"}
    assert inventory.essays[1].checksum == checksum("Essay B")


def test_csv_with_semicolons(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "essay_id;text\nx;Hello, world\n")
    assert load_inventory(path).essays[0].text == "Hello, world"


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "essay_id,text\n\nx,a\n,\n\ny,b\n")
    assert [e.essay_id for e in load_inventory(path).essays] == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("id,text\nx,a\n", "{p}: missing column 'essay_id' (columns found: id, text)"),
        (
            "essay_id,body\nx,a\n",
            "{p}: missing column 'text' or 'path' (columns found: essay_id, body)",
        ),
        ("essay_id,text\nx,a\n  ,b\n", "{p} row 3, field 'essay_id': the essay id is empty"),
        ("essay_id,text\nx,a\ny,b\nx,c\n", "{p}: duplicate essay id 'x' (row 2 and row 4)"),
        ("essay_id,text\nx,a\n x ,c\n", "{p}: duplicate essay id 'x' (row 2 and row 3)"),
        ("essay_id,text,path\nx,,\n", "{p} row 2: 'text' and 'path' are both empty or missing"),
        (
            "essay_id,text,path\nx,a,b.txt\n",
            "{p} row 2: both 'text' and 'path' are given; keep one",
        ),
        ("essay_id,text\nx,  \n", "{p} row 2: 'text' and 'path' are both empty or missing"),
        ("essay_id,text\nx,a,extra\n", "{p} row 2: 3 fields, but the header has 2"),
        ("essay_id,text\nx\n", "{p} row 2: 1 fields, but the header has 2"),
        ("essay_id,,text\nx,,a\n", "{p} row 1: column 2 has no name"),
        ("essay_id,text,text\nx,a,b\n", "{p} row 1: column 'text' appears twice"),
        ("", "{p}: the manifest is empty (no header row)"),
        ("essay_id,text\n", "{p}: the manifest lists no essays"),
        (
            'essay_id,text\na,"x\ny"\nb,"p\nq"\n\tc,\n',
            "{p} row 4 (line 6): 'text' and 'path' are both empty or missing",
        ),
        (
            "essay_id,text\nbad\x07id,a\n",
            "{p} row 2, field 'essay_id': the essay id 'bad\\x07id' contains a control character",
        ),
    ],
)
def test_bad_csv_manifests(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "essays.csv", content)
    with pytest.raises(InputError) as excinfo:
        load_inventory(path)
    assert refused(excinfo) == expected.format(p=path)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("missing.txt", "{p} row 2, field 'path' (missing.txt): file not found"),
        (
            "../outside.txt",
            "{p} row 2, field 'path' (../outside.txt): "
            "path '../outside.txt' is outside the manifest's folder {d}",
        ),
        (
            "{abs}",
            "{p} row 2, field 'path' ({abs}): path '{abs}' is outside the manifest's folder {d}",
        ),
        (
            "sub/../../outside.txt",
            "{p} row 2, field 'path' (sub/../../outside.txt): "
            "path 'sub/../../outside.txt' is outside the manifest's folder {d}",
        ),
        (".", "{p} row 2, field 'path' (.): path '.' is outside the manifest's folder {d}"),
        ("empty.txt", "{p} row 2, field 'path' (empty.txt): the essay is empty"),
        ("latin1.txt", "{p} row 2, field 'path' (latin1.txt): not valid UTF-8 at byte 1"),
        (
            "nul.txt",
            "{p} row 2, field 'path' (nul.txt): contains a NUL byte at byte 1 (a binary file?)",
        ),
        ("sub", "{p} row 2, field 'path' (sub): is a folder, not a file"),
    ],
)
def test_bad_essay_paths_in_manifests(tmp_path: Path, cell: str, expected: str) -> None:
    folder = tmp_path / "inv"
    write(tmp_path / "outside.txt", "outside")
    write(folder / "empty.txt", " \n")
    (folder / "latin1.txt").write_bytes(b"a\xe9")
    (folder / "nul.txt").write_bytes(b"a\x00")
    (folder / "sub").mkdir()
    absolute = str(tmp_path / "outside.txt")
    cell = cell.format(abs=absolute)
    path = write(folder / "essays.csv", f"essay_id,path\nx,{cell}\n")
    with pytest.raises(InputError) as excinfo:
        load_inventory(path)
    assert refused(excinfo) == expected.format(p=path, d=folder, abs=absolute)


def test_paths_inside_the_folder_may_be_absolute_or_use_backslashes(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "a.txt", "A")
    write(tmp_path / "sub" / "b.txt", "B")
    path = write(
        tmp_path / "e.csv", f"essay_id,path\na,sub\\a.txt\nb,{tmp_path / 'sub' / 'b.txt'}\n"
    )
    assert [e.text for e in load_inventory(path).essays] == ["A", "B"]


def test_inline_text_is_checked_like_files(tmp_path: Path) -> None:
    big = "x" * (MAX_ESSAY_BYTES + 1)
    path = write(tmp_path / "e.csv", f"essay_id,text\na,{big}\n")
    with pytest.raises(InputError) as excinfo:
        load_inventory(path)
    assert refused(excinfo).startswith(f"{path} row 2, field 'text': the text is ")


def test_manifest_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(b"essay_id,text\nx,ok\ny,caf\xe9\n")
    with pytest.raises(InputError) as excinfo:
        load_inventory(path)
    assert refused(excinfo) == f"{path}: not valid UTF-8 at byte 24 (line 3)"


def test_manifest_with_nul_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(b"essay_id,text\nx,a\x00b\n")
    with pytest.raises(InputError, match=r"e\.csv: contains a NUL byte at byte 17"):
        load_inventory(path)


def test_duplicate_texts_are_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "essay_id,text\na,same\nb,other\nc,same\n")
    inventory = load_inventory(path)
    assert len(inventory.essays) == 3
    assert inventory.warnings == (
        f"essays 'a', 'c' have the same text (sha256 {checksum('same')[:12]})",
    )


def test_inventory_path_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        load_inventory(tmp_path / "nope")
    assert refused(excinfo) == f"{tmp_path / 'nope'}: inventory not found"
    other = write(tmp_path / "essays.xlsx", "x")
    with pytest.raises(InputError, match=r"a folder of \.txt/\.md files or a \.csv/\.jsonl"):
        load_inventory(other)


# --------------------------------------------------------------------------- JSONL


def test_jsonl_manifest(tmp_path: Path) -> None:
    write(tmp_path / "t" / "b.md", "B text")
    lines = [
        {"essay_id": "a", "text": "A text", "true_score": 1.25, "flags": ["x"], "ok": True},
        {"essay_id": 17, "path": "t/b.md", "note": None},
    ]
    path = write(tmp_path / "e.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    essays = load_inventory(path).essays
    assert [e.essay_id for e in essays] == ["a", "17"]
    assert essays[0].metadata == {"true_score": "1.25", "flags": '["x"]', "ok": "true"}
    assert essays[1].metadata == {"note": ""}
    assert essays[1].text == "B text"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"essay_id": "a", "text": "x"}\n{"essay_id": "b", "text": \n',
            "{p} line 2: not valid JSON (Expecting value at column 27)",
        ),
        ('["a", "x"]\n', "{p} line 1: expected a JSON object {{...}}"),
        ('{"text": "x"}\n', "{p} line 1: missing field 'essay_id'"),
        ('{"essay_id": "a"}\n', "{p} line 1: 'text' and 'path' are both empty or missing"),
        ('{"essay_id": "a", "text": 5}\n', "{p} line 1, field 'text': expected a string"),
        ('{"essay_id": true, "text": "x"}\n', "{p} line 1, field 'essay_id': expected a string"),
        (
            '{"essay_id": "a", "text": "x"}\n\n{"essay_id": "a", "text": "y"}\n',
            "{p}: duplicate essay id 'a' (line 1 and line 3)",
        ),
        ("\n\n", "{p}: the manifest lists no essays"),
    ],
)
def test_bad_jsonl_manifests(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "e.jsonl", content)
    with pytest.raises(InputError) as excinfo:
        load_inventory(path)
    assert refused(excinfo) == expected.format(p=path)


# --------------------------------------------------------------------------- anchors


def anchor_folder(tmp_path: Path, manifest: str) -> Path:
    folder = tmp_path / "anchors"
    write(folder / "f1.txt", "A failing essay.")
    write(folder / "c1.txt", "A solid essay.")
    write(folder / "a1.md", "An excellent essay.")
    write(folder / "copy.txt", "A solid essay.\n")
    write(folder / "blank.txt", "   ")
    write(tmp_path / "outside.txt", "Not an anchor.")
    write(folder / "anchors.csv", manifest)
    return folder


def test_anchor_manifest_from_folder_and_csv(tmp_path: Path) -> None:
    folder = anchor_folder(
        tmp_path, "file,grade,true_score\nf1.txt,F,-2\n./c1.txt, C ,0\na1.md,A,2\n"
    )
    anchors = load_anchor_manifest(folder, ENG5)
    assert anchors == load_anchor_manifest(folder / "anchors.csv", ENG5)
    assert [(a.file, a.grade) for a in anchors] == [
        ("f1.txt", "F"),
        ("c1.txt", "C"),
        ("a1.md", "A"),
    ]
    first = anchors[0]
    assert isinstance(first, AnchorInput)
    assert first.text == "A failing essay." and first.checksum == checksum("A failing essay.")
    assert first.metadata == {"true_score": "-2"}


def test_anchor_with_unknown_grade_names_file_row_and_grades(tmp_path: Path) -> None:
    folder = anchor_folder(tmp_path, "file,grade\nf1.txt,F\nc1.txt,G\n")
    with pytest.raises(InputError) as excinfo:
        load_anchor_manifest(folder, ENG5)
    assert refused(excinfo) == (
        f"{folder / 'anchors.csv'} row 3 (file 'c1.txt'), field 'grade': unknown grade 'G' "
        "for grade scale eng5 (valid grades: F, E, D, C, B, A)"
    )


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("path,grade\nf1.txt,F\n", "{m}: missing column 'file' (columns found: path, grade)"),
        ("file,score\nf1.txt,F\n", "{m}: missing column 'grade' (columns found: file, score)"),
        ("file,grade\nf1.txt,F\n ,C\n", "{m} row 3, field 'file': the file name is empty"),
        ("file,grade\nf1.txt,\n", "{m} row 2 (file 'f1.txt'), field 'grade': the grade is empty"),
        (
            "file,grade\nf1.txt,F\n./f1.txt,E\n",
            "{m}: file 'f1.txt' is listed twice (row 2 and row 3)",
        ),
        (
            "file,grade\nc1.txt,C\ncopy.txt,B\n",
            "{m}: ambiguous anchor: row 2 (c1.txt) and row 3 (copy.txt) have the same text",
        ),
        ("file,grade\nblank.txt,C\n", "{m} row 2, field 'file' (blank.txt): the essay is empty"),
        ("file,grade\nnone.txt,C\n", "{m} row 2, field 'file' (none.txt): file not found"),
        (
            "file,grade\n../outside.txt,C\n",
            "{m} row 2, field 'file' (../outside.txt): "
            "path '../outside.txt' is outside the manifest's folder {d}",
        ),
        ("file,grade\n", "{m}: the manifest lists no anchors"),
    ],
)
def test_bad_anchor_manifests(tmp_path: Path, manifest: str, expected: str) -> None:
    folder = anchor_folder(tmp_path, manifest)
    with pytest.raises(InputError) as excinfo:
        load_anchor_manifest(folder, ENG5)
    assert refused(excinfo) == expected.format(m=folder / "anchors.csv", d=folder)


def test_anchor_folder_without_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "anchors"
    write(folder / "a.txt", "x")
    with pytest.raises(InputError) as excinfo:
        load_anchor_manifest(folder, ENG5)
    assert refused(excinfo) == f"{folder}: no anchors.csv in this folder"
    with pytest.raises(InputError) as excinfo:
        load_anchor_manifest(folder / "list.csv", ENG5)
    assert refused(excinfo) == f"{folder / 'list.csv'}: anchor manifest not found"


def test_anchor_grades_of_a_numeric_scale(tmp_path: Path) -> None:
    scale = GradeScale("numeric6", tuple("123456"))
    folder = anchor_folder(tmp_path, "file,grade\nf1.txt,1\na1.md,6\n")
    assert [a.grade for a in load_anchor_manifest(folder, scale)] == ["1", "6"]

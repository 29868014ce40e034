"""Reading essays, inventories, anchor manifests and assignment texts (spec §2).

Every problem raises :class:`cj_runner.errors.InputError` with one line naming the file
and, for manifests, the row (CSV: ``row N`` counting the header as row 1, so it matches a
spreadsheet and, without multi-line cells, the line number; JSONL: ``line N``) and the
field. Nothing is judged or stored here.

Text rules, the same for every file: strict UTF-8 (a byte-order mark is dropped), no NUL
bytes, at most :data:`MAX_ESSAY_BYTES`; line endings are normalised to ``\\n`` and
surrounding whitespace is stripped; what remains must not be empty. The checksum is the
SHA-256 of that text's UTF-8 bytes, so the same essay saved with CRLF or a BOM keeps its
checksum. Essay ids are stripped and NFC-normalised; spaces and any letters are allowed,
control characters are not.

The rules live in parts, one module each: ``text`` (the text rules, checksums, essay ids
and paths kept inside a folder), ``manifests`` (CSV and JSONL rows), ``inventory`` (the
student essays of a folder or manifest) and ``anchors`` (anchor manifests); the public
names are importable from ``cj_runner.inputs`` as before.
"""

from __future__ import annotations

from cj_runner.inputs.anchors import ANCHOR_MANIFEST, AnchorInput, load_anchor_manifest
from cj_runner.inputs.inventory import (
    ESSAY_SUFFIXES,
    MANIFEST_SUFFIXES,
    Inventory,
    load_inventory,
)
from cj_runner.inputs.manifests import read_csv_table
from cj_runner.inputs.text import (
    MAX_ESSAY_BYTES,
    checksum,
    read_essay_text,
    read_optional_text,
)

__all__ = [
    "ANCHOR_MANIFEST",
    "ESSAY_SUFFIXES",
    "MANIFEST_SUFFIXES",
    "MAX_ESSAY_BYTES",
    "AnchorInput",
    "Inventory",
    "checksum",
    "load_anchor_manifest",
    "load_inventory",
    "read_csv_table",
    "read_essay_text",
    "read_optional_text",
]

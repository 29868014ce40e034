"""The console outputs in the README and docs/ are what the commands print now."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_console_block_shows_what_its_commands_print_now() -> None:
    generate = _generator()
    rendered = generate.render_all(ROOT)
    assert ROOT / "README.md" in rendered
    assert ROOT / "docs" / "reports.md" in rendered
    stale = []
    for page, text in rendered.items():
        current = page.read_text(encoding="utf-8")
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), str(page.relative_to(ROOT)), "now", n=1
            )
            stale.append("\n".join(list(diff)[:40]))
    assert not stale, (
        f"the documented outputs are stale: run `{generate.COMMAND}` and commit the result\n\n"
        + "\n\n".join(stale)
    )


def test_normaliser_keeps_the_shape_of_ids_and_times() -> None:
    generate = _generator()
    normalise = generate.Normaliser(lambda: {"91a27af06760"})
    text = "│ batch 91a27af06760 (x) │ 2026-11-30T01:22:44.123456+00:00 │ deadbeef0000 │"
    out = normalise(text)
    assert len(out) == len(text)
    assert "91a27af06760" not in out and "2026-11-30" not in out
    assert "deadbeef0000" in out  # not a batch id: left alone
    assert normalise(text) == out  # the same id maps to the same stand-in

"""Long report tables print one line per row (a 2,000-essay ranking in well under a second)."""

from __future__ import annotations

import io

from rich.console import Console

from cj_runner.cli.fast_table import FAST_ROWS, FastTable


def render(table: FastTable) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=60, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue()


def table(rows: int) -> FastTable:
    t = FastTable(title="Ranking", caption="n = comparisons")
    t.add_column("rank", justify="right")
    t.add_column("essay")
    t.add_column("score", justify="right")
    for i in range(rows):
        label = f"E{i:05d} [dim](anchor)[/]" if i == 1 else f"E{i:05d}"
        t.add_row(str(i + 1), label, f"{-i / 7:.3f}")
    return t


def test_a_long_table_keeps_every_row_on_its_own_line_with_markup_rendered() -> None:
    n = FAST_ROWS + 50
    lines = render(table(n)).splitlines()
    assert lines[0] == "Ranking"
    assert lines[1].split() == ["rank", "essay", "score"]
    assert set(lines[2].replace(" ", "")) == {"─"}
    body = lines[3 : 3 + n]
    assert [line.split()[0] for line in body] == [str(i + 1) for i in range(n)]
    assert body[1].split()[1:3] == ["E00001", "(anchor)"]  # markup applied, not printed
    assert "[dim]" not in "".join(lines)
    # right-justified numbers end in the same column
    assert len({len(line.rstrip()) for line in body if "anchor" not in line}) == 1
    assert lines[-1] == "n = comparisons"


def test_a_short_table_keeps_rich_layout() -> None:
    out = render(table(5))
    assert "E00004" in out and "(anchor)" in out
    assert len(out.splitlines()) > 5

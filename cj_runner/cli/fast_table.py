"""A rich :class:`~rich.table.Table` that prints long tables fast.

Rich lays out every cell of a table as its own renderable (measure, wrap, pad, crop):
about a millisecond per row of a ten-column report, seconds for the ranking of a
2,000-essay batch. :class:`FastTable` keeps rich's layout up to :data:`FAST_ROWS` rows;
above it, the same title, columns, header rule, cells (markup and styles kept) and
caption are printed one line per row, each column as wide as its widest cell, never
wrapped. Rows beyond the terminal's width are left to the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

__all__ = ["FAST_ROWS", "FastTable"]

FAST_ROWS = 300
"""Longest table laid out by rich itself; longer ones take the one-line-per-row path."""


def _text(cell: object) -> Text:
    if isinstance(cell, Text):
        return cell
    value = str(cell)
    return Text.from_markup(value) if "[" in value else Text(value)


class FastTable(Table):
    """:class:`rich.table.Table` with a one-line-per-row path for long tables."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.row_count <= FAST_ROWS:
            yield from super().__rich_console__(console, options)
            return
        columns = self.columns
        cells = [[_text(c) for c in cast(Iterable[object], col._cells)] for col in columns]
        headers = [_text(col.header) for col in columns]
        widths = [
            max([cell_len(h.plain), *(cell_len(t.plain) for t in col)])
            for h, col in zip(headers, cells, strict=True)
        ]
        gap = Text(" ")

        def line(items: list[Text]) -> Text:
            out = Text(no_wrap=True, overflow="ignore", end="\n")
            for i, (item, col, width) in enumerate(zip(items, columns, widths, strict=True)):
                pad = width - cell_len(item.plain)
                if col.justify == "right":
                    out.append(" " * pad)
                    out.append_text(item)
                else:
                    out.append_text(item)
                    if i < len(items) - 1:
                        out.append(" " * pad)
                if i < len(items) - 1:
                    out.append_text(gap)
            return out

        if self.title:
            yield _text(self.title)
        if self.show_header:
            head = line(headers)
            head.stylize("bold")
            yield head
            yield Text(" ".join("─" * w for w in widths), no_wrap=True, overflow="ignore")
        for r in range(self.row_count):
            yield line([col[r] for col in cells])
        if self.caption:
            yield _text(self.caption)

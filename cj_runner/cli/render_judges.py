"""Rich tables of the judges report (``cj-report judges``)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from cj_runner.cli.render import health_lines
from cj_runner.cli.render_reports import fmt

__all__ = ["judges_renderable"]


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}"


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )


def judges_renderable(r: dict[str, Any]) -> Group:
    """The judges report: one row per judge, kappa per pair, the reliability change."""
    name = f" ({escape(r['batch_name'])})" if r.get("batch_name") else ""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("batch", f"{r['batch_id']}{name}  {r['status']}")
    for key, value in health_lines(r):
        head.add_row(key, value)
    head.add_row("judges", str(len(r["judges"])))
    head.add_row("model", escape(r["model"]))
    rel = r["reliability"]
    if rel is not None:
        flagged = ", ".join(escape(j) for j in rel["flagged"]) or "none"
        head.add_row("misfitting", flagged)
        if rel["flagged"] and rel["action"] != "keep":
            verb = "without" if rel["action"] == "exclude" else "down-weighting"
            head.add_row(
                f"SSR {verb} them",
                f"{fmt(rel['ssr_after'])} (all judges {fmt(rel['ssr_all'])})",
            )
            if rel["robust_after"] is not None:
                head.add_row(
                    "robust reliability",
                    f"{fmt(rel['robust_after'])} without them "
                    f"(all judges {fmt(rel['robust_all'])})",
                )
        else:
            head.add_row("SSR", fmt(rel["ssr_all"]))
            if rel["robust_all"] is not None:
                head.add_row("robust reliability", fmt(rel["robust_all"]))
    for note in r["notes"]:
        head.add_row("note", escape(note))
    parts: list[Any] = [Panel(head, title="Judges", title_align="left")]

    table = _table("Per judge (position bias in percentage points, 95% interval)")
    columns = ("judge", "source", "n", "bias pp", "95% interval", "infit", "z", "misfit", "agree")
    for col in columns:
        table.add_column(col, justify="left" if col in ("judge", "source") else "right")
    for j in r["judges"]:
        table.add_row(
            escape(j["judge"]),
            j["source"],
            str(j["comparisons"]),
            _pp(j["position_bias"]),
            f"{_pp(j['position_bias_low'])} to {_pp(j['position_bias_high'])}",
            fmt(j["infit"], 2),
            fmt(j["infit_z"], 1),
            "[red]yes[/]" if j["flagged"] else "no",
            "-" if j["agreement"] is None else f"{j['agreement']:.0%}",
        )
    parts.append(table)
    if r["kappa"]:
        kappa = _table("Agreement of two judges on the pairs both judged (Cohen's kappa)")
        for col in ("judge", "judge ", "shared pairs", "asked of both", "agree", "kappa"):
            kappa.add_column(col, justify="left" if col.startswith("judge") else "right")
        for k in r["kappa"]:
            kappa.add_row(
                escape(k["judge_a"]),
                escape(k["judge_b"]),
                str(k["shared_edges"]),
                str(k.get("asked_of_both", 0)),
                "-" if k["agreement"] is None else f"{k['agreement']:.0%}",
                fmt(k["kappa"], 2),
            )
        parts.append(kappa)
    return Group(*parts)

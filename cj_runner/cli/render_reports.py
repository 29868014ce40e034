"""Rich tables of the reports (fairness, coverage, ranking, grades).

Each function takes the plain dict built by :mod:`cj_runner.services.reports` and returns
something :class:`rich.console.Console` can print.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cj_runner.cli.fast_table import FastTable
from cj_runner.cli.render import health_lines, spread_lines

__all__ = [
    "coverage_renderable",
    "fairness_renderable",
    "grades_renderable",
    "ranking_renderable",
    "renderable_for",
]

MAX_LISTED = 12


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: ``-`` for None, floats with ``digits`` decimals, yes/no for booleans."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _listing(items: list[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(escape(i) for i in items[:MAX_LISTED])
    return shown + (f" … (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def _batch_line(r: dict[str, Any]) -> str:
    name = f" ({escape(r['batch_name'])})" if r.get("batch_name") else ""
    line = f"{r['batch_id']}{name}  {r['status']}  stop reason: {r['stop_reason'] or '-'}"
    return line + (f" ({escape(r['stop_detail'])})" if r.get("stop_detail") else "")


def _head(title: str, rows: list[tuple[str, str]]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return Panel(grid, title=title, title_align="left")


def _data_table(title: str, caption: str | None = None) -> Table:
    """A compact table (no vertical rules) that fits wide reports in 80 columns; one
    line per row above :data:`~cj_runner.cli.fast_table.FAST_ROWS` rows."""
    return FastTable(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )


def _essay_label(essay_id: str, is_anchor: bool, grade: str | None = None) -> str:
    if not is_anchor:
        return escape(essay_id)
    return f"{escape(essay_id)} [dim](anchor{' ' + grade if grade else ''})[/]"


# ---------------------------------------------------------------- fairness


def fairness_renderable(r: dict[str, Any]) -> Group:
    """The fairness report: position balance per node and the judge's position bias."""
    ci = r["position_a_ci95"]
    share = (
        f"{_pct(r['position_a_share'])} of {r['comparisons']} "
        f"(95% CI {_pct(ci[0])} to {_pct(ci[1])})"
        if ci is not None
        else "no comparisons"
    )
    order = (
        f"{fmt(r['order_effect'])} ± {fmt(r['order_effect_se'])} (logit, whole batch)"
        if r["order_effect"] is not None
        else "not fitted"
    )
    missing = [
        f"{m['essays'][0]}–{m['essays'][1]} ({m['comparisons']}x as "
        f"{m['asked_as'][0]}/{m['asked_as'][1]})"
        for m in r["missing_complement"]
    ]
    rows = [
        ("batch", _batch_line(r)),
        *health_lines(r),
        ("mode", r["mode"] or "all"),
        ("comparisons", str(r["comparisons"])),
        ("largest skew", f"{fmt(r['max_skew'])} (mean {fmt(r['mean_skew'])})"),
        ("never in A", _listing(r["never_in_a"])),
        ("never in B", _listing(r["never_in_b"])),
        ("missing complement", _listing(missing)),
        (
            "flip rate",
            f"{fmt(r['flip_rate'])} over {r['flip_edges']} edge(s) asked both ways"
            if r["flip_rate"] is not None
            else "no edge asked both ways",
        ),
        ("A won", share),
        ("order effect", order),
    ]
    if r["max_skew_threshold"] is not None:
        above = r["nodes_above_max_skew"]
        verdict = (
            f"[red]{len(above)} node(s) above {r['max_skew_threshold']}: {_listing(above)}[/]"
            if above
            else f"[green]no node above {r['max_skew_threshold']}[/]"
        )
        rows.append(("max skew gate", verdict))
    table = _data_table("Positions per node")
    for col in ("essay", "A", "B", "comparisons", "skew"):
        table.add_column(col, justify="left" if col == "essay" else "right")
    above_set = set(r["nodes_above_max_skew"])
    for n in r["nodes"]:
        skew = fmt(n["skew"])
        if n["essay_id"] in above_set:
            skew = f"[red]{skew}[/]"
        table.add_row(
            _essay_label(n["essay_id"], n["is_anchor"]),
            str(n["a_count"]),
            str(n["b_count"]),
            str(n["comparisons"]),
            skew,
        )
    return Group(_head("Fairness", rows), table)


# ---------------------------------------------------------------- coverage

_DECISIONS = {
    "REQUEST_MORE_COMPARISONS": "more",
    "RESAMPLE": "resample",
    "FINALIZE_SCORING": "finalize",
    "FINALIZE_FAILURE": "fail",
}


def coverage_renderable(r: dict[str, Any]) -> Group:
    """The coverage report: graph, budget, failures and the per-wave history."""
    per_node = r["comparisons_per_node"]
    components = r["components"]
    comp_text = f"{r['component_count']} (largest {len(components[0]) if components else 0})"
    if len(components) > 1:
        comp_text += "; others: " + _listing(["{" + ", ".join(c) + "}" for c in components[1:]])
    failures = "\n".join(
        f"{kind}: {c['attempts']} attempt(s): "
        + ", ".join(f"{c[s]} {s}" for s in ("retried", "failed", "lost", "other") if c[s])
        for kind, c in r["failures_by_kind"].items()
    )
    net = {True: "small net", False: "regular batch", None: "-"}[r["is_small_net"]]
    rows = [
        ("batch", _batch_line(r)),
        *health_lines(r),
        ("nodes", f"{r['nodes']} ({r['students']} students, {r['anchors']} anchors); {net}"),
        (
            "pairs",
            f"{r['successful_pairs_count']} of {r['max_possible_pairs']} compared "
            f"({_pct(r['coverage_fraction'])}); complete: {fmt(r['unique_coverage_complete'])}",
        ),
        (
            "resampling passes",
            f"{r['resampling_pass_count']} (cap {fmt(r['resampling_pass_cap'])})",
        ),
        (
            "calls",
            f"{r['calls_sent']} sent of {r['total_budget']} budget "
            f"({_pct(r['budget_used_fraction'])}), {r['budget_left']} left",
        ),
        (
            "comparisons",
            f"{r['successful_comparisons']} successful, {r['failed_comparisons']} failed"
            + "".join(f"; {m}: {c}" for m, c in r["successes_by_mode"].items()),
        ),
        (
            "per node",
            f"min {fmt(per_node['min'])}, median {fmt(per_node['median'], 1)}, "
            f"max {fmt(per_node['max'])}",
        ),
        ("components", comp_text),
        ("failures by kind", failures or "none"),
    ]
    table = _data_table("Waves")
    for col in ("wave", "mode", "size", "ok", "calls", "Δmax", "SSR", "next", "reason"):
        table.add_column(
            col,
            justify="left" if col in ("mode", "next", "reason") else "right",
            no_wrap=col in ("mode", "next", "reason"),
        )
    for w in r["waves"]:
        table.add_row(
            str(w["wave"]),
            w["mode"],
            str(w["size"]),
            str(w["successes"]),
            str(w["calls_sent"]),
            fmt(w["max_score_change"]),
            fmt(w["ssr"]),
            _DECISIONS.get(w["decision"] or "", w["decision"] or "-"),
            w["reason"] or "-",
        )
    return Group(_head("Coverage", rows), table)


# ---------------------------------------------------------------- ranking


def _fit_cell(value: float | None, flagged: bool) -> str:
    """A fit statistic, red with a ``*`` when it flags the node as misfitting."""
    if value is not None and flagged:
        return f"[bold red]{value:.2f}*[/]"
    return fmt(value, 2) + " "


def _misfit_rule(r: dict[str, Any]) -> str:
    if r.get("misfit_statistic") == "infit_zstd":
        return (
            f"standardised infit (ZSTD) above {r['misfit_threshold']} with at least "
            f"{r['misfit_min_comparisons']} comparisons"
        )
    return f"infit or outfit above {r['misfit_threshold']}"


def ranking_renderable(r: dict[str, Any]) -> Group:
    """The ranking: scores with 95% intervals, comparisons, fit statistics."""
    order = (
        f"; order effect {fmt(r['order_effect'])} ± {fmt(r['order_effect_se'])}"
        if r["order_effect"] is not None
        else ""
    )
    rows = [
        ("batch", _batch_line(r)),
        *health_lines(r),
        ("scores", r["interval"] or "-"),
        *spread_lines(r),
        (
            "reliability",
            f"design-robust {fmt(r['robust_reliability'])}"
            + (
                f" (± {fmt(r['robust_reliability_sd'])})"
                if r["robust_reliability_sd"] is not None
                else ""
            )
            + f"; SSR {fmt(r['ssr'])}"
            + (f" ({r['ssr_note']})" if r["ssr_note"] else "")
            + order,
        ),
        *([("warning", r["reliability_warning"])] if r["reliability_warning"] else []),
        (
            "misfits",
            f"{len(r['misfits'])} ({_misfit_rule(r)}): " + _listing(r["misfits"]),
        ),
    ]
    table = _data_table(
        "Ranking",
        f"score, SE, 95% interval: {r['interval'] or '-'}; "
        f"* misfit: {_misfit_rule(r)}; n = comparisons",
    )
    for col in ("rank", "essay", "score", "SE", "95% interval", "n", "wins"):
        table.add_column(
            col,
            justify="left" if col in ("essay", "95% interval") else "right",
            no_wrap=col != "essay",
        )
    table.add_column("infit", justify="right", no_wrap=True)
    table.add_column("outfit", justify="right", no_wrap=True)
    table.add_column("infit z", justify="right", no_wrap=True)
    standardised = r.get("misfit_statistic") == "infit_zstd"
    for row in r["rows"]:
        interval = (
            f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]"
            if row["ci95_low"] is not None
            else "-"
        )
        infit = _fit_cell(row["infit"], row["misfit"] and not standardised)
        outfit = _fit_cell(row["outfit"], row["misfit"] and not standardised)
        infit_z = _fit_cell(row.get("infit_z"), row["misfit"] and standardised)
        table.add_row(
            fmt(row["rank"]),
            _essay_label(row["essay_id"], row["is_anchor"], row["known_grade"]),
            fmt(row["score"]),
            fmt(row["se"]),
            interval,
            str(row["comparisons"]),
            str(row["wins"]),
            infit,
            outfit,
            infit_z,
        )
    return Group(_head("Ranking", rows), table)


# ---------------------------------------------------------------- grades


def grades_renderable(r: dict[str, Any]) -> RenderableType:
    """Grade projection: students' grades and probabilities, anchors and boundaries."""
    rows = [
        ("batch", _batch_line(r)),
        *health_lines(r),
        ("assignment", f"{r['assignment_id'] or '-'} (scale {r['grade_scale'] or '-'})"),
    ]
    if r["deferred_reason"]:
        rows.append(("projection", f"[yellow]deferred: {r['deferred_reason']}[/]"))
    else:
        rows.append(("distribution", "  ".join(f"{g}: {c}" for g, c in r["distribution"].items())))
    if r["boundaries"]:
        rows.append(
            (
                "boundaries",
                "  ".join(f"{b['lower']}|{b['upper']} {b['score']:.2f}" for b in r["boundaries"]),
            )
        )
    for warning in r["warnings"]:
        rows.append(("[yellow]anchor warning[/]", escape(warning)))
    parts: list[RenderableType] = [_head("Grades", rows)]
    if r["anchors"]:
        anchors = _data_table("Anchor calibration")
        for col in ("anchor", "known grade", "score", "SE", "fitted index", "band"):
            anchors.add_column(col, justify="left" if col == "anchor" else "right")
        for a in r["anchors"]:
            band = a["band"] or "-"
            if a["band"] is not None and a["band"] != a["grade"]:
                band = f"[yellow]{band}[/]"
            anchors.add_row(
                escape(a["essay_id"]),
                a["grade"],
                fmt(a["score"]),
                fmt(a["se"]),
                fmt(a["fitted_index"], 2),
                band,
            )
        parts.append(anchors)
    if r["students"]:
        students = _data_table(
            "Students", "grade = most probable grade; expected = grade at the expected index"
        )
        for col in ("essay", "score", "grade", "conf.", "expected"):
            students.add_column(col, justify="left" if col == "essay" else "right", no_wrap=True)
        for g in r["grades"]:
            students.add_column(f"P({g})", justify="right", no_wrap=True)
        for s in r["students"]:
            expected = (
                f"{s['expected_grade']} ({s['expected_index']:.2f})"
                if s["expected_index"] is not None
                else "-"
            )
            students.add_row(
                escape(s["essay_id"]),
                fmt(s["score"], 2),
                s["projected_grade"] or "[yellow]deferred[/]",
                _pct(s["confidence"]),
                expected,
                *(fmt(s["probabilities"].get(g), 2) for g in r["grades"]),
            )
        parts.append(students)
    return Group(*parts)


def renderable_for(kind: str, report: dict[str, Any]) -> RenderableType:
    """The table view of report ``kind``."""
    builders = {
        "fairness": fairness_renderable,
        "coverage": coverage_renderable,
        "ranking": ranking_renderable,
        "grades": grades_renderable,
    }
    if kind not in builders:
        return Text(f"unknown report {kind}")
    return builders[kind](report)

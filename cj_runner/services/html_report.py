"""A self-contained HTML report of a batch (spec §9, issue 5).

One file, no network: the plots are matplotlib (Agg) PNGs embedded as ``data:`` URIs, the
style sheet and the small table-sorting script are inline, and a Content-Security-Policy
forbids loading anything else, so the page looks the same offline, attached to an e-mail
or archived with the batch. Sections (their ``id`` attributes are stable):

``summary`` the batch at a glance; ``scores`` scores with 95% intervals, anchors and grade
boundaries; ``positions`` A/B counts per node; ``convergence`` largest score change and SSR
per wave; ``degrees`` comparisons per node; then the report tables ``ranking``,
``grades``, ``fairness`` and ``coverage``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cj_runner import __version__
from cj_runner.services.reports import (
    coverage_report,
    fairness_report,
    grades_report,
    load_batch_data,
    ranking_report,
)
from cj_runner.services.summary import build_summary
from cj_runner.storage import Store
from cj_runner.storage.imports import load_imported

__all__ = ["SECTION_IDS", "build_html", "render_html"]

SECTION_IDS: tuple[str, ...] = (
    "summary",
    "scores",
    "positions",
    "convergence",
    "degrees",
    "ranking",
    "grades",
    "fairness",
    "coverage",
)
"""The ``id`` of every section of the page, in page order (a batch with two or more
judges also has ``judges``, after ``fairness``)."""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_AGGREGATE_ABOVE = 100  # above this many nodes the positions plot becomes a histogram
_SSR_FLOOR = -1.0  # the SSR axis stops here; lower values are drawn clipped
_LABEL_LIMIT = 60  # above this many nodes, plots leave out the essay ids on the axis
_DPI = 96
_STUDENT = "#3b6ea5"
_ANCHOR = "#d9822b"
_A_COLOUR = "#4c956c"
_B_COLOUR = "#a4a4c1"


# ---------------------------------------------------------------- plots


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float, height: float, *, fit_labels: bool) -> Figure:
    """A figure of ``width`` x ``height`` inches.

    Constrained layout (which measures every label, ~30 ms a figure) only where labels
    must be fitted: rotated essay ids, a legend outside the axes. Elsewhere fixed margins,
    in inches, leave room for the tick labels, the axis labels and the title.
    """
    if fit_labels:
        return Figure(figsize=(width, height), layout="constrained")
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        bottom=0.55 / height,
        top=1 - 0.35 / height,
        wspace=0.22,
    )
    return fig


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def scores_plot(ranking: dict[str, Any], grades: dict[str, Any]) -> str | None:
    """Scores by rank with 95% intervals; anchors labelled with their grade; boundaries."""
    rows = [r for r in ranking["rows"] if r["score"] is not None]
    if not rows:
        return None
    fig = _new_figure(11, 5, fit_labels=len(rows) <= _LABEL_LIMIT)
    ax = fig.add_subplot()
    for is_anchor, colour, label in ((False, _STUDENT, "student"), (True, _ANCHOR, "anchor")):
        pts = [(i, r) for i, r in enumerate(rows) if r["is_anchor"] == is_anchor]
        if not pts:
            continue
        xs = [i for i, _ in pts]
        ys = [r["score"] for _, r in pts]
        err = [1.959963984540054 * (r["se"] or 0.0) for _, r in pts]
        if len(pts) > _AGGREGATE_ABOVE and not is_anchor:
            # thousands of error bars are slow to draw and unreadable: the students'
            # intervals become one band, their scores one line of small dots
            low = [y - e for y, e in zip(ys, err, strict=True)]
            high = [y + e for y, e in zip(ys, err, strict=True)]
            ax.fill_between(
                xs, low, high, color=colour, alpha=0.25, lw=0, label=f"{label} 95% interval"
            )
            ax.plot(xs, ys, ".", ms=2, color=colour, label=f"{label} (posterior mean)")
            continue
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            fmt="o",
            ms=4,
            color=colour,
            ecolor=colour,
            alpha=0.85,
            capsize=2,
            label=f"{label} (95% posterior interval)",
        )
        if is_anchor:
            for i, r in pts:
                ax.annotate(
                    r["known_grade"] or "?",
                    (i, r["score"]),
                    xytext=(4, 4),
                    textcoords="offset points",
                    color=colour,
                    fontsize=9,
                    fontweight="bold",
                )
    for b in grades.get("boundaries", []):
        ax.axhline(b["score"], color="#888888", lw=0.8, ls="--")
        ax.annotate(
            f"{b['lower']}|{b['upper']}",
            (1.0, b["score"]),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 2),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="#555555",
        )
    ax.set_xlabel("rank (1 = highest score)")
    ax.set_ylabel("Bradley-Terry score (logit)")
    ax.set_title(
        "Scores with 95% intervals" + (" and grade boundaries" if grades.get("boundaries") else "")
    )
    if len(rows) <= _LABEL_LIMIT:
        ax.set_xticks(range(len(rows)), [r["essay_id"] for r in rows], rotation=90, fontsize=7)
    else:
        ax.set_xticks(range(0, len(rows), max(1, len(rows) // 20)))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def positions_plot(fairness: dict[str, Any]) -> str | None:
    """A and B counts per node: A above the axis, B below, so imbalance stands out.

    Above :data:`_AGGREGATE_ABOVE` nodes one bar per node is unreadable: the plot shows
    instead how many nodes have each A − B difference.
    """
    nodes = fairness["nodes"]
    if not nodes:
        return None
    if len(nodes) > _AGGREGATE_ABOVE:
        return _positions_histogram(fairness)
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(len(nodes)))
    a = [n["a_count"] for n in nodes]
    b = [n["b_count"] for n in nodes]
    ax.bar(xs, a, 0.8, color=_A_COLOUR, label="position A")
    ax.bar(xs, [-v for v in b], 0.8, color=_B_COLOUR, label="position B")
    ax.plot(xs, [x - y for x, y in zip(a, b, strict=True)], "k_", ms=8, label="A − B")
    ax.axhline(0, color="black", lw=0.8)
    if len(nodes) <= _LABEL_LIMIT:
        ax.set_xticks(xs, [n["essay_id"] for n in nodes], rotation=90, fontsize=7)
    ax.set_xlabel("node")
    ax.set_ylabel("comparisons (B shown below 0)")
    ax.set_title(f"Positions per node (largest skew {fairness['max_skew']:.3f})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _positions_histogram(fairness: dict[str, Any]) -> str:
    nodes = fairness["nodes"]
    diffs = Counter(int(n["a_count"]) - int(n["b_count"]) for n in nodes)
    fig = _new_figure(11, 4, fit_labels=False)
    ax = fig.add_subplot()
    xs = sorted(diffs)
    ax.bar(xs, [diffs[x] for x in xs], 0.8, color=_A_COLOUR)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(min(xs[0], -1) - 1, max(xs[-1], 1) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("A − B: times shown first minus times shown second")
    ax.set_ylabel("nodes")
    ax.set_title(
        f"Positions: {len(nodes)} nodes by A − B (largest skew {fairness['max_skew']:.3f})"
    )
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def clip_to_floor(
    points: Sequence[tuple[int, float]], floor: float
) -> tuple[list[tuple[int, float]], list[int]]:
    """Points with values below ``floor`` raised to it (so they stay inside the axes), and
    the x of those that were raised."""
    shown = [(x, max(v, floor)) for x, v in points]
    return shown, [x for x, v in points if v < floor]


def convergence_plot(coverage: dict[str, Any], robust: float | None = None) -> str | None:
    """Largest score change and SSR after each wave (SSR below the axis floor is drawn on
    the floor with a down-pointing marker); the final robust reliability as a line."""
    waves = coverage["waves"]
    if not waves:
        return None
    fig = _new_figure(11, 4, fit_labels=False)
    left, right = fig.subplots(1, 2)
    xs = [w["wave"] for w in waves]
    change = [w["max_score_change"] for w in waves]
    pts = [(x, c) for x, c in zip(xs, change, strict=True) if c is not None and math.isfinite(c)]
    if pts:
        left.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=_STUDENT)
    threshold = coverage.get("score_stability_threshold")
    if threshold:
        left.axhline(threshold, color="#aa3333", ls="--", lw=0.8, label="stability threshold")
        left.legend(fontsize=8)
    left.set_xlabel("wave")
    left.set_ylabel("largest score change")
    left.set_title("Largest score change per wave")
    left.grid(alpha=0.3)
    ssr = [w["ssr"] for w in waves]
    pts = [(x, s) for x, s in zip(xs, ssr, strict=True) if s is not None and math.isfinite(s)]
    if pts:
        # early waves can give very negative SSR: clip at the floor so every point stays
        # inside the axes, and mark the clipped ones
        shown, clipped = clip_to_floor(pts, _SSR_FLOOR)
        right.plot(
            [p[0] for p in shown], [p[1] for p in shown], "o-", ms=3, color=_ANCHOR, label="SSR"
        )
        if clipped:
            right.plot(
                clipped,
                [_SSR_FLOOR] * len(clipped),
                "v",
                ms=7,
                color="#aa3333",
                label=f"SSR below {_SSR_FLOOR:g} (clipped)",
            )
        low = min(p[1] for p in shown)
        right.set_ylim(min(low, 0.0) - 0.08, 1.05)
    if robust is not None and math.isfinite(robust):
        right.axhline(
            robust,
            color=_STUDENT,
            ls="--",
            lw=1.0,
            label=f"robust reliability (final) {robust:.3f}",
        )
    if pts or robust is not None:
        right.legend(fontsize=8, loc="lower right")
    right.set_xlabel("wave")
    right.set_ylabel("SSR")
    right.set_title("Scale separation reliability per wave")
    right.grid(alpha=0.3)
    return _png(fig)


def degrees_plot(coverage: dict[str, Any]) -> str | None:
    """How many nodes took part in how many comparisons."""
    dist = coverage["degree_distribution"]
    if not dist:
        return None
    fig = _new_figure(8, 3.5, fit_labels=False)
    ax = fig.add_subplot()
    xs = [d["comparisons"] for d in dist]
    ax.bar(xs, [d["nodes"] for d in dist], width=0.8, color=_STUDENT)
    ax.set_xlim(min(xs) - 2, max(xs) + 2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("successful comparisons of a node")
    ax.set_ylabel("nodes")
    ax.set_title(f"Degree distribution ({coverage['component_count']} connected component(s))")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------- HTML pieces


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v, digits) for v in value)
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


Column = tuple[str, str, Callable[[dict[str, Any]], Any]]


def _table(table_id: str, columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    """A sortable table; numbers are right-aligned and sort numerically."""
    head = "".join(f'<th scope="col">{html.escape(label)}</th>' for _, label, _ in columns)
    getters = [get for _, _, get in columns]
    escape = html.escape
    body = []
    # thousands of rows on a big batch: the common cell types take a short path (the
    # same text as the general one below; digits need no escaping)
    for row in rows:
        cells = ["<tr>"]
        for get in getters:
            value = get(row)
            kind = type(value)
            if kind is float:
                attr = f' data-v="{value}" class="num"' if math.isfinite(value) else ""
                cells.append(f"<td{attr}>{value:.3f}</td>")
            elif kind is int:
                cells.append(f'<td data-v="{value}" class="num">{value}</td>')
            elif value is None:
                cells.append("<td>–</td>")
            elif kind is str:
                cells.append(f"<td>{escape(value)}</td>")
            else:
                num = isinstance(value, int | float) and not isinstance(value, bool)
                attr = f' data-v="{value}" class="num"' if num and math.isfinite(value) else ""
                cells.append(f"<td{attr}>{escape(_cell(value))}</td>")
        cells.append("</tr>")
        body.append("".join(cells))
    if not rows:
        body.append(f'<tr><td colspan="{len(columns)}">no rows</td></tr>')
    # a wide table scrolls inside its own box instead of widening the page
    return (
        f'<div class="wide"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _facts(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th scope='row'>{html.escape(k)}</th><td>{html.escape(_cell(v))}</td></tr>"
        for k, v in items
    )
    return f'<table class="facts">{rows}</table>'


def _figure(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return f'<p class="empty">No data to plot: {html.escape(alt)}.</p>'
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _alerts(summary: dict[str, Any]) -> str:
    """Banners for provisional results and a judge without usable signal."""
    out = []
    if summary.get("provisional"):
        out.append(
            '<p class="alert provisional" role="alert"><strong>Provisional results.</strong> '
            "The batch did not finish: scores, intervals and grades are from the comparisons "
            "so far and will change when it is resumed.</p>"
        )
    health = summary.get("judge_health") or {}
    if health.get("status") == "no_signal":
        reasons = "; ".join(html.escape(str(r)) for r in health.get("reasons", []))
        out.append(
            '<p class="alert no-signal" role="alert"><strong>The judge carries no usable '
            "signal.</strong> The results carry no signal and grades are not trustworthy: "
            f"{reasons}.</p>"
        )
    return "".join(out)


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def _robust(report: dict[str, Any]) -> str:
    """The design-robust reliability beside SSR, with its method and SD when known."""
    value = report.get("robust_reliability")
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:.3f}"
    sd = report.get("robust_reliability_sd")
    if sd is not None and math.isfinite(sd):
        text += f" (SD {sd:.3f})"
    method = report.get("robust_reliability_method")
    if method:
        text += f", {method}"
    warning = report.get("reliability_warning")
    if warning:
        text += f"; {warning}"
    return text


def _summary_section(s: dict[str, Any]) -> str:
    share = s.get("position_a_share") or {}
    grades = s.get("grades") or {}
    items: list[tuple[str, Any]] = [
        ("batch", s["batch_id"] + (f" ({s['batch_name']})" if s.get("batch_name") else "")),
        ("status", s["status"]),
        ("stop reason", s["stop_reason"]),
        ("judge", f"{s['judge']} ({s.get('model') or '-'})"),
        ("students / anchors", f"{s['students']} / {s['anchors']}"),
        ("calls", f"{s['calls_sent']} sent of {s['total_budget']} budget"),
        (
            "comparisons",
            f"{s['successful_comparisons']} successful, {s['failed_comparisons']} failed"
            + (f", success rate {s['success_rate']:.3f}" if s["success_rate"] is not None else ""),
        ),
        (
            "coverage",
            f"{s['successful_pairs_count']} of {s['max_possible_pairs']} pairs; "
            f"{s['resampling_pass_count']} resampling pass(es); {s['waves']} waves",
        ),
        ("scores", s.get("interval") or "-"),
        ("SSR", s.get("ssr")),
        ("robust reliability", _robust(s)),
        *([("SSR note", s["ssr_note"])] if s.get("ssr_note") else []),
        ("largest A/B skew", s.get("max_skew")),
    ]
    if share and share.get("share") is not None and math.isfinite(share["share"]):
        items.append(
            (
                "A won",
                f"{share['share']:.1%} (95% CI {share['low']:.1%} to {share['high']:.1%})",
            )
        )
    if s.get("order_effect") is not None:
        items.append(("order effect", f"{s['order_effect']:.3f} ± {s['order_effect_se']:.3f}"))
    if grades.get("projected"):
        items.append(("grades", "  ".join(f"{g}: {c}" for g, c in grades["distribution"].items())))
    elif grades.get("deferred_reason"):
        items.append(("grades", f"deferred: {grades['deferred_reason']}"))
    items.append(("tokens", f"{s['tokens_in']:,} in / {s['tokens_out']:,} out"))
    return _section("summary", "Summary", _facts(items))


def _ranking_section(r: dict[str, Any]) -> str:
    cols: list[Column] = [
        ("rank", "rank", lambda x: x["rank"]),
        ("essay", "essay", lambda x: x["essay_id"]),
        ("anchor", "anchor grade", lambda x: x["known_grade"] if x["is_anchor"] else None),
        ("projected", "projected grade", lambda x: x["projected_grade"]),
        ("score", "score", lambda x: x["score"]),
        ("se", "SE", lambda x: x["se"]),
        ("low", "95% low", lambda x: x["ci95_low"]),
        ("high", "95% high", lambda x: x["ci95_high"]),
        ("mle", "MLE score", lambda x: x["mle_score"]),
        ("mle_se", "MLE SE", lambda x: x["mle_se"]),
        ("n", "comparisons", lambda x: x["comparisons"]),
        ("wins", "wins", lambda x: x["wins"]),
        ("infit", "infit", lambda x: x["infit"]),
        ("outfit", "outfit", lambda x: x["outfit"]),
        ("infit_z", "infit z", lambda x: x.get("infit_z")),
        ("outfit_z", "outfit z", lambda x: x.get("outfit_z")),
        ("misfit", "misfit", lambda x: x["misfit"]),
    ]
    head = _facts(
        [
            ("score, SE, 95% interval", r["interval"] or "-"),
            ("MLE score, MLE SE", r["mle_interval"] or "-"),
            ("SSR", r["ssr"]),
            ("robust reliability", _robust(r)),
            (
                "misfit rule",
                f"{r.get('misfit_statistic', 'mean_square')} above {r['misfit_threshold']}",
            ),
            ("misfits", ", ".join(r["misfits"]) or "none"),
        ]
    )
    return _section("ranking", "Ranking", head + _table("ranking-table", cols, r["rows"]))


def _probability(grade: str) -> Callable[[dict[str, Any]], Any]:
    def get(row: dict[str, Any]) -> Any:
        return row["probabilities"].get(grade)

    return get


def _grades_section(g: dict[str, Any]) -> str:
    facts: list[tuple[str, Any]] = [
        ("assignment", f"{g['assignment_id'] or '-'} (scale {g['grade_scale'] or '-'})"),
    ]
    if g["deferred_reason"]:
        facts.append(("projection", f"deferred: {g['deferred_reason']}"))
    else:
        facts.append(("distribution", "  ".join(f"{k}: {v}" for k, v in g["distribution"].items())))
    facts += [(f"boundary {b['lower']}|{b['upper']}", b["score"]) for b in g["boundaries"]]
    facts += [("anchor warning", w) for w in g["warnings"]]
    body = _facts(facts)
    if g["anchors"]:
        anchor_cols: list[Column] = [
            ("essay", "anchor", lambda x: x["essay_id"]),
            ("grade", "known grade", lambda x: x["grade"]),
            ("score", "score", lambda x: x["score"]),
            ("se", "SE", lambda x: x["se"]),
            ("fitted", "fitted index", lambda x: x["fitted_index"]),
            ("band", "band", lambda x: x["band"]),
        ]
        body += "<h3>Anchor calibration</h3>" + _table("anchors-table", anchor_cols, g["anchors"])
    if g["students"]:
        student_cols: list[Column] = [
            ("essay", "essay", lambda x: x["essay_id"]),
            ("score", "score", lambda x: x["score"]),
            ("se", "SE", lambda x: x["se"]),
            ("grade", "grade", lambda x: x["projected_grade"]),
            ("confidence", "confidence", lambda x: x["confidence"]),
            ("expected", "expected grade", lambda x: x["expected_grade"]),
            ("index", "expected index", lambda x: x["expected_index"]),
        ]
        student_cols += [
            (f"p_{grade}", f"P({grade})", _probability(grade)) for grade in g["grades"]
        ]
        body += "<h3>Students</h3>" + _table("grades-table", student_cols, g["students"])
    return _section("grades", "Grades", body)


def _fairness_section(f: dict[str, Any]) -> str:
    ci = f["position_a_ci95"]
    facts: list[tuple[str, Any]] = [
        ("comparisons", f["comparisons"]),
        ("largest skew", f["max_skew"]),
        ("mean skew", f["mean_skew"]),
        ("never in A", ", ".join(f["never_in_a"]) or "none"),
        ("never in B", ", ".join(f["never_in_b"]) or "none"),
        (
            "missing complement",
            "; ".join("–".join(m["essays"]) for m in f["missing_complement"]) or "none",
        ),
        ("flip rate", f"{_cell(f['flip_rate'])} over {f['flip_edges']} edge(s)"),
        (
            "A won",
            f"{_pct(f['position_a_share'])} (95% CI {_pct(ci[0])} to {_pct(ci[1])})" if ci else "–",
        ),
        ("order effect", f"{_cell(f['order_effect'])} ± {_cell(f['order_effect_se'])}"),
    ]
    cols: list[Column] = [
        ("essay", "essay", lambda x: x["essay_id"]),
        ("anchor", "anchor", lambda x: x["is_anchor"]),
        ("a", "A", lambda x: x["a_count"]),
        ("b", "B", lambda x: x["b_count"]),
        ("n", "comparisons", lambda x: x["comparisons"]),
        ("skew", "skew", lambda x: x["skew"]),
    ]
    return _section(
        "fairness", "Fairness", _facts(facts) + _table("fairness-table", cols, f["nodes"])
    )


def _judges_section(j: dict[str, Any]) -> str:
    """Every judge on one scale (only on the page of a batch with two or more judges)."""
    rel = j["reliability"] or {}
    facts: list[tuple[str, Any]] = [
        ("model", j["model"]),
        ("misfitting", ", ".join(rel.get("flagged") or []) or "none"),
        ("SSR, all judges", rel.get("ssr_all")),
        (f"SSR after ({rel.get('action', '-')})", rel.get("ssr_after")),
        ("robust reliability, all judges", rel.get("robust_all")),
        ("robust reliability without misfits", rel.get("robust_after")),
        *(("note", note) for note in j["notes"]),
    ]
    cols: list[Column] = [
        ("judge", "judge", lambda x: x["judge"]),
        ("source", "source", lambda x: x["source"]),
        ("n", "comparisons", lambda x: x["comparisons"]),
        ("bias", "position bias (pp)", lambda x: _pp(x["position_bias"])),
        (
            "bias_ci",
            "95% interval (pp)",
            lambda x: f"{_pp(x['position_bias_low'])} to {_pp(x['position_bias_high'])}",
        ),
        ("infit", "infit", lambda x: x["infit"]),
        ("infit_z", "infit z", lambda x: x["infit_z"]),
        ("flagged", "misfit", lambda x: x["flagged"]),
        ("agreement", "agreement", lambda x: x["agreement"]),
    ]
    kappa_cols: list[Column] = [
        ("a", "judge", lambda x: x["judge_a"]),
        ("b", "judge", lambda x: x["judge_b"]),
        ("n", "shared pairs", lambda x: x["shared_edges"]),
        ("both", "asked of both", lambda x: x.get("asked_of_both", 0)),
        ("agreement", "agreement", lambda x: x["agreement"]),
        ("kappa", "Cohen's kappa", lambda x: x["kappa"]),
    ]
    body = (
        _facts(facts)
        + _table("judges-table", cols, j["judges"])
        + _table("kappa-table", kappa_cols, j["kappa"])
    )
    return _section("judges", "Judges", body)


def _pp(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}"


def _coverage_section(c: dict[str, Any]) -> str:
    per_node = c["comparisons_per_node"]
    facts: list[tuple[str, Any]] = [
        (
            "pairs",
            f"{c['successful_pairs_count']} of {c['max_possible_pairs']} "
            f"({_pct(c['coverage_fraction'])}); complete: {_cell(c['unique_coverage_complete'])}",
        ),
        (
            "resampling passes",
            f"{c['resampling_pass_count']} (cap {_cell(c['resampling_pass_cap'])})",
        ),
        ("calls", f"{c['calls_sent']} sent of {c['total_budget']} budget"),
        (
            "comparisons per node",
            f"min {per_node['min']}, median {per_node['median']}, max {per_node['max']}",
        ),
        ("connected components", c["component_count"]),
        ("stop reason", c["stop_reason"]),
    ]
    facts += [
        (
            f"failures: {kind}",
            f"{v['attempts']} ({v['retried']} retried, {v['failed']} failed, {v['lost']} lost)",
        )
        for kind, v in c["failures_by_kind"].items()
    ]
    cols: list[Column] = [
        ("wave", "wave", lambda x: x["wave"]),
        ("mode", "mode", lambda x: x["mode"]),
        ("size", "size", lambda x: x["size"]),
        ("ok", "successes", lambda x: x["successes"]),
        ("calls", "calls sent (total)", lambda x: x["calls_sent"]),
        ("change", "largest change", lambda x: x["max_score_change"]),
        ("ssr", "SSR", lambda x: x["ssr"]),
        ("decision", "decision", lambda x: x["decision"]),
        ("reason", "reason", lambda x: x["reason"]),
    ]
    return _section("coverage", "Coverage", _facts(facts) + _table("waves-table", cols, c["waves"]))


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1180px;padding:1rem 1.5rem;color:#1d1d1f;background:#fff}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem}
nav{display:flex;flex-wrap:wrap;gap:.2rem .8rem}section{margin:1.5rem 0}figure{margin:0}
.wide{overflow-x:auto;max-width:100%}th,td{overflow-wrap:anywhere}
.alert{padding:.6rem .8rem;border-radius:4px;margin:.8rem 0}
.provisional{background:#fff4d6;border:1px solid #e0b400}
.no-signal{background:#fde2e1;border:1px solid #c62828}
img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85rem;color:#555}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;background:#f4f4f6}
table.facts th{background:#f4f4f6;width:30%;max-width:16rem}.empty{color:#777}
.meta{color:#666;font-size:.85rem}
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-asc") !== "1";
      th.setAttribute("data-asc", asc ? "1" : "0");
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        if (!x || !y) { return 0; }
        var xv = x.getAttribute("data-v"), yv = y.getAttribute("data-v");
        var r = (xv !== null && yv !== null) ? parseFloat(xv) - parseFloat(yv)
          : x.textContent.localeCompare(y.textContent);
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def render_html(
    summary: dict[str, Any],
    ranking: dict[str, Any],
    grades: dict[str, Any],
    fairness: dict[str, Any],
    coverage: dict[str, Any],
    judges: dict[str, Any] | None = None,
) -> str:
    """The page from already built reports (pure: no store access); ``judges`` (the
    judges report) adds its section after fairness."""
    title = f"cj-runner report: batch {summary['batch_id']}" + (
        f" ({summary['batch_name']})" if summary.get("batch_name") else ""
    )
    ids = list(SECTION_IDS)
    if judges is not None:
        ids.insert(ids.index("fairness") + 1, "judges")
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in ids)
    sections = [
        _summary_section(summary),
        _section(
            "scores",
            "Scores",
            _figure(
                scores_plot(ranking, grades),
                "scores with 95% intervals",
                "Each point is a node's Bradley-Terry score with its 95% interval: "
                f"{ranking.get('interval') or '-'}; anchors are labelled with their known "
                "grade; dashed lines are the grade boundaries of the anchor calibration.",
            ),
        ),
        _section(
            "positions",
            "Positions (A/B)",
            _figure(
                positions_plot(fairness),
                "A and B counts per node",
                "How often each node was shown first (A) and second (B); above "
                f"{_AGGREGATE_ABOVE} nodes, how many nodes have each difference A − B.",
            ),
        ),
        _section(
            "convergence",
            "Convergence",
            _figure(
                convergence_plot(coverage, summary.get("robust_reliability")),
                "largest score change and SSR per wave",
                "Largest change of any node's score since the previous wave (the stability "
                "rule) and the scale separation reliability after each wave (its axis stops "
                "at -1: lower values, common in early waves, are drawn on the floor with a "
                "red marker); the dashed line is the final design-robust reliability.",
            ),
        ),
        _section(
            "degrees",
            "Comparisons per node",
            _figure(
                degrees_plot(coverage),
                "degree distribution of the comparison graph",
                "Number of nodes by number of successful comparisons.",
            ),
        ),
        _ranking_section(ranking),
        _grades_section(grades),
        _fairness_section(fairness),
        *([_judges_section(judges)] if judges is not None else []),
        _coverage_section(coverage),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>"
        f'<p class="meta">status {html.escape(str(summary["status"]))}, stop reason '
        f"{html.escape(str(summary['stop_reason']))}; cj-runner {html.escape(__version__)}</p>"
        f"<nav>{nav}</nav>{_alerts(summary)}</header><main>"
        + "\n".join(sections)
        + f"</main><script>{_SCRIPT}</script></body></html>\n"
    )


async def build_html(store: Store, batch_ref: str) -> str:
    """Load the batch named by id or name and render its HTML report."""
    data = await load_batch_data(store, batch_ref)
    summary = await build_summary(
        store,
        data.batch.id,
        (data.batch, data.nodes, data.attempts, data.projections, data.outcomes),
    )
    # a batch with one judge (no panel, no imports) gets the page it always had
    judges = None
    imported = await load_imported(store, data.batch.id)
    # the stored judge profile was validated when the batch was created: its ``panel``
    # list is read as it is (validating it again imports the judge configuration, ~0.1 s)
    if imported or data.batch.judge.get("panel"):
        # here, not at the top: the panel code (and the judges it names) is not imported
        # for the one-judge page
        from cj_runner.services.panels import judges_report, panel_inputs_of

        panel = panel_inputs_of(data.batch, data.nodes, data.attempts, imported)
        judges = judges_report(panel) if len(panel.judges) > 1 else None
    # essay ids are data: "$...$" in an id is text, never mathtext to parse
    with matplotlib.rc_context({"text.parse_math": False}):
        return render_html(
            summary,
            ranking_report(data),
            grades_report(data),
            fairness_report(data),
            coverage_report(data),
            judges,
        )

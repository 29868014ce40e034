"""The report page's plots: matplotlib (Agg) figures as base64 PNG ``data:`` URIs."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

AGGREGATE_ABOVE = 100  # above this many nodes the positions plot becomes a histogram
_SSR_FLOOR = -1.0  # the SSR axis stops here; lower values are drawn clipped
_LABEL_LIMIT = 60  # above this many nodes, plots leave out the essay ids on the axis
_DPI = 96
_STUDENT = "#3b6ea5"
_ANCHOR = "#d9822b"
_A_COLOUR = "#4c956c"
_B_COLOUR = "#a4a4c1"


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
        if len(pts) > AGGREGATE_ABOVE and not is_anchor:
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

    Above :data:`AGGREGATE_ABOVE` nodes one bar per node is unreadable: the plot shows
    instead how many nodes have each A − B difference.
    """
    nodes = fairness["nodes"]
    if not nodes:
        return None
    if len(nodes) > AGGREGATE_ABOVE:
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

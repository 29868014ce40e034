"""A self-contained HTML report of a batch (spec §9, issue 5).

One file, no network: the plots are matplotlib (Agg) PNGs embedded as ``data:`` URIs, the
style sheet and the small table-sorting script are inline, and a Content-Security-Policy
forbids loading anything else, so the page looks the same offline, attached to an e-mail
or archived with the batch. Sections (their ``id`` attributes are stable):

``summary`` the batch at a glance; ``scores`` scores with 95% intervals, anchors and grade
boundaries; ``positions`` A/B counts per node; ``convergence`` largest score change and SSR
per wave; ``degrees`` comparisons per node; then the report tables ``ranking``,
``grades``, ``fairness`` and ``coverage``.

This module builds the page; the plots are :mod:`~cj_runner.services.html_charts`, the
tables and sections :mod:`~cj_runner.services.html_sections`.
"""

from __future__ import annotations

import html
from typing import Any

import matplotlib

from cj_runner import __version__
from cj_runner.services.html_charts import (
    AGGREGATE_ABOVE,
    clip_to_floor,
    convergence_plot,
    degrees_plot,
    positions_plot,
    scores_plot,
)
from cj_runner.services.html_sections import (
    Column,
    alerts,
    coverage_section,
    fairness_section,
    figure,
    grades_section,
    judges_section,
    ranking_section,
    section,
    summary_section,
)
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

__all__ = [
    "CSP",
    "SECTION_IDS",
    "Column",
    "build_html",
    "clip_to_floor",
    "convergence_plot",
    "degrees_plot",
    "positions_plot",
    "render_html",
    "scores_plot",
]

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
        summary_section(summary),
        section(
            "scores",
            "Scores",
            figure(
                scores_plot(ranking, grades),
                "scores with 95% intervals",
                "Each point is a node's Bradley-Terry score with its 95% interval: "
                f"{ranking.get('interval') or '-'}; anchors are labelled with their known "
                "grade; dashed lines are the grade boundaries of the anchor calibration.",
            ),
        ),
        section(
            "positions",
            "Positions (A/B)",
            figure(
                positions_plot(fairness),
                "A and B counts per node",
                "How often each node was shown first (A) and second (B); above "
                f"{AGGREGATE_ABOVE} nodes, how many nodes have each difference A − B.",
            ),
        ),
        section(
            "convergence",
            "Convergence",
            figure(
                convergence_plot(coverage, summary.get("robust_reliability")),
                "largest score change and SSR per wave",
                "Largest change of any node's score since the previous wave (the stability "
                "rule) and the scale separation reliability after each wave (its axis stops "
                "at -1: lower values, common in early waves, are drawn on the floor with a "
                "red marker); the dashed line is the final design-robust reliability.",
            ),
        ),
        section(
            "degrees",
            "Comparisons per node",
            figure(
                degrees_plot(coverage),
                "degree distribution of the comparison graph",
                "Number of nodes by number of successful comparisons.",
            ),
        ),
        ranking_section(ranking),
        grades_section(grades),
        fairness_section(fairness),
        *([judges_section(judges)] if judges is not None else []),
        coverage_section(coverage),
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
        f"<nav>{nav}</nav>{alerts(summary)}</header><main>"
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

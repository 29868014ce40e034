"""The report page's HTML: sortable tables, facts, figures and one section per report."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any


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


def figure(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return f'<p class="empty">No data to plot: {html.escape(alt)}.</p>'
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def alerts(summary: dict[str, Any]) -> str:
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


def section(section_id: str, title: str, body: str) -> str:
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


def _spread(report: dict[str, Any]) -> str:
    """The spread ``tau`` of the shown posterior, its 95% interval and what it is."""
    text = f"{report['tau']:.2f}"
    low, high = report.get("tau_ci95_low"), report.get("tau_ci95_high")
    if low is not None and high is not None:
        text += f" [{low:.2f}, {high:.2f}]"
    if report.get("tau_label"):
        text += f" ({report['tau_label']})"
    return text


def summary_section(s: dict[str, Any]) -> str:
    share = s.get("position_a_share") or {}
    grades = s.get("grades") or {}
    items: list[tuple[str, Any]] = [
        ("batch", s["batch_id"] + (f" ({s['batch_name']})" if s.get("batch_name") else "")),
        ("status", s["status"]),
        (
            "stop reason",
            f"{s['stop_reason']}: {s['stop_detail']}" if s.get("stop_detail") else s["stop_reason"],
        ),
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
        *([("spread τ", _spread(s))] if s.get("tau") is not None else []),
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
    return section("summary", "Summary", _facts(items))


def ranking_section(r: dict[str, Any]) -> str:
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
    return section("ranking", "Ranking", head + _table("ranking-table", cols, r["rows"]))


def _probability(grade: str) -> Callable[[dict[str, Any]], Any]:
    def get(row: dict[str, Any]) -> Any:
        return row["probabilities"].get(grade)

    return get


def grades_section(g: dict[str, Any]) -> str:
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
    return section("grades", "Grades", body)


def fairness_section(f: dict[str, Any]) -> str:
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
    return section(
        "fairness", "Fairness", _facts(facts) + _table("fairness-table", cols, f["nodes"])
    )


def judges_section(j: dict[str, Any]) -> str:
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
    return section("judges", "Judges", body)


def _pp(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}"


def coverage_section(c: dict[str, Any]) -> str:
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
    return section("coverage", "Coverage", _facts(facts) + _table("waves-table", cols, c["waves"]))

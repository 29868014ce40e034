"""Rich rendering of plans, summaries and progress (the only module that draws)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from cj_runner.services.executor import ProgressEvent


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cost_text(cost_usd: float, unknown: int, digits: int = 4) -> str:
    """``$X``, or ``≥ $X (N calls with unknown cost)`` when some calls sent never
    answered (their cost is unknown; :func:`cj_runner.services.summary.cost_note`)."""
    if not unknown:
        return f"${cost_usd:.{digits}f}"
    calls = "call" if unknown == 1 else "calls"
    return f"≥ ${cost_usd:.{digits}f} ({unknown} {calls} with unknown cost: no answer received)"


def plan_table(plan: dict[str, Any]) -> Table:
    """The plan as a two-column table."""
    table = Table(title="Plan", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    rows = [
        ("inventory", plan["inventory"]),
        ("assignment", plan["assignment_id"] or "-"),
        ("profile / judge", f"{plan['profile']} / {plan['judge']} ({plan['model']})"),
        ("students", plan["students"]),
        (
            "anchors",
            f"{plan['anchors']}  "
            + " ".join(f"{g}:{c}" for g, c in plan["anchors_by_grade"].items()),
        ),
        ("nodes", plan["nodes"]),
        ("budget (calls)", plan["total_budget"]),
        ("max possible pairs (nC2)", plan["max_possible_pairs"]),
        ("net", "small net" if plan["is_small_net"] else "regular batch"),
        ("expected coverage waves", plan["expected_coverage_waves"]),
        ("resampling passes (cap)", plan["max_resampling_passes"]),
        (
            "estimated tokens",
            f"{plan['estimated_input_tokens']:,} in / {plan['estimated_output_tokens']:,} out",
        ),
        ("estimated cost (at most)", f"${plan['estimated_cost_usd']:.4f}"),
    ]
    if plan.get("estimated_batch_cost_usd") is not None:
        rows.append(
            (
                "synchronous / batch API",
                f"${plan['estimated_sync_cost_usd']:.4f} / "
                f"${plan['estimated_batch_cost_usd']:.4f}"
                + ("  (--batch-api on)" if plan.get("batch_api") else "  (with --batch-api)"),
            )
        )
    if plan.get("panel_judges"):
        rows.append(("panel judges", ", ".join(plan["panel_judges"])))
        rows.append(
            (
                "pairs asked of two judges",
                f"{plan['panel_double_share']:.0%} of pairs (PANEL_DOUBLE_SHARE): about "
                f"{plan['estimated_double_asks']} of the {plan['estimated_calls']} calls",
            )
        )
    shape = plan.get("judge_request")
    if shape:
        rows.append(
            (
                "judge request",
                f"{shape['base_url']}; rule {shape['rule']}; temperature "
                + ("not sent" if shape["temperature"] is None else str(shape["temperature"]))
                + f"; {shape['max_tokens_param']} {shape['max_tokens']}"
                + f" ({shape['max_tokens_after_truncation']} after a truncation)"
                + f"; structured output {' > '.join(shape['structured_output'])}",
            )
        )
    for key, value in rows:
        table.add_row(key, str(value))
    for warning in plan.get("warnings", []):
        table.add_row("[yellow]warning[/]", warning)
    return table


def health_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Head rows that say the results are provisional or the judge carries no signal."""
    from rich.markup import escape

    lines: list[tuple[str, str]] = []
    if report.get("provisional"):
        lines.append(
            (
                "[bold yellow]provisional[/]",
                "[yellow]the batch did not finish: scores and grades are from the "
                "comparisons so far and will change[/]",
            )
        )
    health = report.get("judge_health") or {}
    if health.get("status") == "no_signal":
        reasons = "; ".join(escape(str(r)) for r in health.get("reasons", []))
        lines.append(
            (
                "[bold red]judge[/]",
                "[bold red]NO USABLE SIGNAL: the results carry no signal and grades are "
                f"not trustworthy[/] ({reasons})",
            )
        )
    return lines


def spread_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The head row with the spread ``tau`` of the shown posterior and what it is (none
    for a batch scored before reports showed it)."""
    if report.get("tau") is None:
        return []
    text = f"τ {report['tau']:.2f}"
    if report.get("tau_ci95_low") is not None and report.get("tau_ci95_high") is not None:
        text += f" [{report['tau_ci95_low']:.2f}, {report['tau_ci95_high']:.2f}]"
    if report.get("tau_label"):
        text += f": {escape(str(report['tau_label']))}"
    return [("spread", text)]


def summary_renderable(s: dict[str, Any]) -> Group:
    """The one-screen summary of a batch."""
    status_style = {"COMPLETED": "green", "FAILED": "red"}.get(s["status"], "yellow")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        "batch", f"{s['batch_id']}" + (f" ({s['batch_name']})" if s.get("batch_name") else "")
    )
    head.add_row("status", f"[{status_style}]{s['status']}[/]  stop reason: {s['stop_reason']}")
    if s.get("stop_detail"):
        head.add_row("stop check", escape(s["stop_detail"]))
    for label, line in health_lines(s):
        head.add_row(label, line)
    head.add_row(
        "calls",
        f"{s['calls_sent']} sent of {s['total_budget']} budget; "
        f"{s['successful_comparisons']} ok, {s['failed_comparisons']} failed"
        + (f", success rate {s['success_rate']:.3f}" if s["success_rate"] is not None else "")
        + (f"; {s['cache_hits']} from cache" if s.get("cache_hits") else ""),
    )
    if s.get("cache_sources"):
        head.add_row(
            "cache",
            "answers reused from batch "
            + ", ".join(f"{batch} ({n})" for batch, n in s["cache_sources"].items()),
        )
    if s.get("judge_error"):
        head.add_row("[red]judge error[/]", escape(str(s["judge_error"])))
    if s.get("attempt_errors"):
        head.add_row("errors", ", ".join(f"{k}: {v}" for k, v in s["attempt_errors"].items() if k))
    head.add_row(
        "coverage",
        f"{s['successful_pairs_count']}/{s['max_possible_pairs']} pairs"
        f" (complete: {'yes' if s['unique_coverage_complete'] else 'no'}),"
        f" {s['resampling_pass_count']} resampling pass(es), {s['waves']} waves",
    )
    share = s.get("position_a_share") or {}
    head.add_row(
        "fairness",
        f"largest A/B skew {_fmt(s['max_skew'])}, mean {_fmt(s['mean_skew'])}; "
        + (
            f"A won {share['share']:.1%} [{share['low']:.1%}, {share['high']:.1%}]"
            if share
            else "no comparisons"
        )
        + (
            f"; order effect {_fmt(s['order_effect'])} ± {_fmt(s['order_effect_se'])}"
            if s.get("order_effect") is not None
            else ""
        ),
    )
    rel = ""
    if s.get("robust_reliability") is not None:
        rel = f"design-robust {_fmt(s['robust_reliability'])}"
        if s.get("robust_reliability_sd") is not None:
            rel += f" ± {_fmt(s['robust_reliability_sd'])}"
        rel += "; "
    rel += f"SSR {_fmt(s['ssr'])}" + (f" ({s['ssr_note']})" if s.get("ssr_note") else "")
    head.add_row("reliability", rel)
    if s.get("interval"):
        head.add_row("scores", str(s["interval"]))
    for label, text in spread_lines(s):
        head.add_row(label, text)
    if s.get("reliability_warning"):
        head.add_row("[yellow]warning[/]", s["reliability_warning"])
    head.add_row(
        "tokens / cost",
        f"{s['tokens_in']:,} in / {s['tokens_out']:,} out; "
        + cost_text(s["cost_usd"], s.get("unknown_cost_calls") or 0)
        + (
            f" (plan estimate ≤ ${s['estimated_cost_usd']:.4f})"
            if s.get("estimated_cost_usd") is not None
            else ""
        ),
    )
    if s.get("batch_api"):
        # with calls of unknown cost, the saving and the synchronous price are bounds too
        at_least = "≥ " if s.get("unknown_cost_calls") else ""
        head.add_row(
            "batch API",
            f"{s['provider_jobs']} provider jobs; saved {at_least}${s['saved_usd']:.4f} "
            f"({at_least}${s['sync_cost_usd']:.4f} at the synchronous price)",
        )
    grades = s.get("grades") or {}
    if grades.get("projected"):
        head.add_row("grades", "  ".join(f"{g}: {c}" for g, c in grades["distribution"].items()))
    elif grades.get("deferred_reason"):
        head.add_row("grades", f"deferred: {grades['deferred_reason']}")
    for warning in grades.get("warnings", []):
        head.add_row("[yellow]anchor[/]", warning)
    top = Table(title=f"Top {len(s['top'])}", title_justify="left")
    for col in ("rank", "essay", "score", "SE"):
        top.add_column(col, justify="right" if col != "essay" else "left")
    for row in s["top"]:
        label = row["essay_id"] + (
            f" [dim](anchor {row['known_grade']})[/]" if row["is_anchor"] else ""
        )
        top.add_row(str(row["rank"]), label, _fmt(row["score"]), _fmt(row["se"]))
    panel = Panel(head, title="cj-runner summary", title_align="left")
    return Group(panel, top) if s["top"] else Group(panel)


class ProgressView:
    """A Rich progress bar fed by the executor's callback."""

    def __init__(self, console: Console) -> None:
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("calls", total=None, info="")
        self.last_change: float | None = None
        self.job: str | None = None  # batch-API mode: the provider job's last state

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.max_score_change is not None:
            self.last_change = event.max_score_change
        change = f"{self.last_change:.3f}" if self.last_change is not None else "-"
        if event.job is not None:
            self.job = event.job
        info = (
            f"wave {event.wave} {event.mode} | Δmax {change} | "
            f"ok {event.successes} fail {event.failures}"
            + (f" cache {event.cache_hits}" if event.cache_hits else "")
            + (f" | {self.job}" if self.job else "")
        )
        self.progress.update(
            self.task, completed=event.calls_sent, total=event.total_budget, info=info
        )

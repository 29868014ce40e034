"""Large batches (issue 14 items 3 and 4): throughput, selection, finalize, reports, memory.

All runs use the mock judge with zero latency and the **default** settings except the
number of essays, the budget (10 comparisons per essay: ``5 n`` calls), stability
switched off and ``MAX_ITERATIONS`` raised, so every run asks its whole budget (waves of
12, 8 calls in flight, ``infogain``, order effect in the per-wave fits).

(a) calls/s end to end (executor, SQLite, refits, finalization included) at n = 100, 500,
    2,000 (target >= 1,000/s at n = 2,000), and to the last answer; where the CPU goes
    (selection and refit in worker threads, the event loop's thread, the rest) and how
    many transactions the recorder committed;
(b) CPU milliseconds of one wave's pair selection against n (synthetic history at 5
    comparisons per essay; target < 5 ms at n = 2,000 for ``infogain``);
(c) finalization and every report of the 2,000-essay batch (target < 2 s each): the
    finalization in process, each report as its own ``cj-report`` process (imports
    included, bytecode cached as in an installed package), wall and CPU seconds;
(d) peak resident memory of a whole 10,000-essay batch at 10 comparisons per essay, in a
    child process (target < 2 GB).

Timings depend on the machine and its load; the load average is printed with them.
Run: ``python benchmarks/bench_scale.py`` (``--quick``: n = 100/500 only, no 10,000;
``--no-memory``: no 10,000; ``--memory-only``: (d) alone; ``--anchors``: (d) with 12
anchors, grades projected; ``--dense-diagonal``: (d) as before rule 3a took the variances,
with the dense ``n x n`` diagonal covariance; ``--postgres URL``: (a) only, each batch on
a new database of that PostgreSQL server, dropped after it).
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workflow import run_batch, write_inventory, write_profile

from cj_runner.config import Settings, settings_from_stored
from cj_runner.core.pairing import select_pairs
from cj_runner.services.workflow_setup import batch_workflow, workflow_from_settings

CPE = 10
REPORTS = (
    ("summary",),
    ("ranking",),
    ("ranking", "--format", "json"),
    ("ranking", "--format", "csv"),
    ("fairness",),
    ("fairness", "--format", "json"),
    ("coverage",),
    ("coverage", "--format", "csv"),
    ("grades",),
    ("comparisons",),
    ("comparisons", "--format", "json"),
    ("html",),
)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def settings_for(n: int) -> dict[str, Any]:
    return {
        "MAX_PAIRWISE_COMPARISONS": n * CPE // 2,
        "SCORE_STABILITY_THRESHOLD": 0.0,
        "MAX_ITERATIONS": 1_000_000,
        "SEED": 1,
    }


class Breakdown:
    """Where a run's CPU goes: the workflow's selection (``plan_wave``) and refit
    (``end_wave``), both in worker threads; the event loop's thread (executor, recorder,
    SQLAlchemy, mock judge); the rest of the process (SQLite's driver thread, thread
    hand-offs); and the recorder's transactions."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {"plan_wave": 0.0, "end_wave": 0.0}
        self.commits = 0
        self._patched: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Breakdown:
        from cj_runner.core.workflow import WorkflowState
        from cj_runner.storage.recorder import Recorder

        for name in ("plan_wave", "end_wave"):
            original = getattr(WorkflowState, name)

            def timed(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
                started = time.thread_time()
                try:
                    return _original(*args, **kw)
                finally:
                    self.cpu[_name] += time.thread_time() - started

            self._patch(WorkflowState, name, timed)
        commit = Recorder._commit

        async def counted(recorder: Any, batch: Any) -> None:
            before = recorder.commits
            await commit(recorder, batch)
            self.commits += recorder.commits - before

        self._patch(Recorder, "_commit", counted)
        return self

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __exit__(self, *_exc: object) -> None:
        for owner, name, value in reversed(self._patched):
            setattr(owner, name, value)


ANCHOR_GRADES = ("F", "E", "D", "C", "B", "A")  # the shipped eng5 scale


def register_anchors(tmp: Path, db: Path, per_grade: int = 2) -> str:
    """Register ``per_grade`` synthetic anchors per grade of the eng5 scale (true scores
    spread over the essays' range) with ``cj-anchors register``; returns the assignment."""
    folder = tmp / "anchors"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,grade,true_score"]
    for k, grade in enumerate(ANCHOR_GRADES):
        for j in range(per_grade):
            name = f"anchor_{grade}_{j}.txt"
            (folder / name).write_text(f"Anchor essay {j} of grade {grade}.", encoding="utf-8")
            rows.append(f"{name},{grade},{1.5 * (k - 2.5) + 0.3 * j:.2f}")
    (folder / "anchors.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cj_anchors = Path(sys.executable).parent / "cj-anchors"
    command = [str(cj_anchors), "register", str(folder), "--assignment-id", "scale"]
    subprocess.run(
        [*command, "--grade-scale", "eng5", "--db", str(db)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return "scale"


async def _postgres_admin(server: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(server)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run_postgres(
    server: str, tmp: Path, n: int, breakdown: Breakdown | None = None
) -> tuple[str, float, float, float]:
    """:func:`run` on a new database of the PostgreSQL server ``server`` (a SQLAlchemy
    URL of a database there), dropped afterwards; (batch id, seconds, seconds to the last
    answer, CPU seconds)."""
    from sqlalchemy.engine import make_url

    name = f"cj_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        db = make_url(server).set(database=name).render_as_string(hide_password=False)
        _, batch_id, seconds, last, cpu = run(tmp, n, breakdown, db=db)
        return batch_id, seconds, last, cpu
    finally:
        asyncio.run(_postgres_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(
    tmp: Path,
    n: int,
    breakdown: Breakdown | None = None,
    anchors: bool = False,
    db: str | None = None,
) -> tuple[Path, str, float, float, float]:
    """One batch of ``n`` essays (with ``anchors``: and 12 anchors, grades projected);
    (db, batch id, seconds, seconds to the last answer, CPU seconds). With ``breakdown``,
    the event loop's CPU goes in ``breakdown.cpu["loop"]``; ``db``: a database URL instead
    of a new SQLite file (no anchors)."""
    inventory = write_inventory(tmp / f"inv_{n}", n)
    profile = write_profile(
        tmp,
        f"scale_{n}",
        settings_for(n),
        {"kind": "mock", "seed": 1, "latency": {"distribution": "zero"}},
    )
    path = tmp / f"scale_{n}.db"
    assignment = register_anchors(tmp, path) if anchors else None
    cpu = time.process_time()
    loop_cpu = time.thread_time()  # asyncio.run runs the loop on this thread
    target: Any = db if db is not None else path
    batch_id, elapsed, last_answer = asyncio.run(run_batch(target, inventory, profile, assignment))
    if breakdown is not None:
        breakdown.cpu["loop"] = time.thread_time() - loop_cpu
    return path, batch_id, elapsed, last_answer, time.process_time() - cpu


def selection_ms(n: int, strategy: str, reps: int = 20) -> float:
    """CPU ms of one wave's selection (waves of 12) after ``2.5 n`` random comparisons."""
    settings = Settings(SCORE_STABILITY_THRESHOLD=0.0, MATCHING_STRATEGY=strategy)
    wf = workflow_from_settings(settings, n_nodes=n, seed=1, total_budget=10**9)
    gen = np.random.default_rng(0)
    truth = gen.normal(0, 1.5, n)
    m = 5 * n // 2
    a = gen.integers(0, n, m)
    b = (a + gen.integers(1, n, m)) % n
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        wf.count_call()
        p = 1 / (1 + np.exp(truth[y] - truth[x]))
        wf.record_success(x, y, "A" if gen.random() < p else "B")
    wf.end_wave(1, [])
    captured: list[Any] = []
    import cj_runner.core.workflow.selection as workflow_module

    original = workflow_module.select_pairs
    workflow_module.select_pairs = lambda *args, **kw: (
        captured.append((args, kw)) or original(*args, **kw)
    )
    try:
        wf.plan_wave()  # the wave's state as the workflow builds it (posterior included)
    finally:
        workflow_module.select_pairs = original
    args, kw = captured[0]
    state, mode, size = args[0], args[1], args[2]
    cpu = time.process_time()
    for i in range(reps):
        select_pairs(state, mode, size, np.random.default_rng(i), **kw)
    return 1000 * (time.process_time() - cpu) / reps


def time_finalize(db: Path, batch_id: str) -> float:
    """Seconds of the batch's finalization (fit, posterior, reliability, projection, store)."""
    from cj_runner.services.finalize import finalize_batch
    from cj_runner.storage import open_store, resolve_db_url
    from cj_runner.storage import repository as repo

    async def body() -> float:
        store = await open_store(resolve_db_url(str(db)))
        try:
            batch = await repo.find_batch(store, batch_id)
            nodes = await repo.load_nodes(store, batch_id)
            attempts = await repo.load_attempts(store, batch_id)
            settings = settings_from_stored(batch.settings)
            # the batch's workflow before its stored answers enter (a cold-start fit)
            wf = batch_workflow(
                settings, nodes, seed=batch.seed, total_budget=int(batch.state["total_budget"])
            )
            for r in attempts:
                if r["status"] == "success":
                    wf.record_success(r["a_idx"], r["b_idx"], r["winner"], r["mode"], r["slot"])
            state = {k: batch.state[k] for k in ("calls_sent", "successes", "failures")}
            started = time.perf_counter()
            await finalize_batch(
                store,
                batch_id,
                nodes=nodes,
                workflow=wf,
                settings=settings,
                grade_scale=None,
                status="COMPLETED",
                stop_reason=str(batch.stop_reason),
                state_values=state,
            )
            return time.perf_counter() - started
        finally:
            await store.close()

    return asyncio.run(body())


# As an installed package runs: with its modules' bytecode cached (pip compiles it at
# install; a development checkout with PYTHONDONTWRITEBYTECODE set would compile every
# module of cj_runner in every report process, ~0.1 s). One untimed report writes it.
REPORT_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_report(db: Path, batch_id: str, args: tuple[str, ...], out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``cj-report`` process."""
    extra = ["-o", str(out / "report.html")] if args[0] == "html" else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cj_report = Path(sys.executable).parent / "cj-report"
    subprocess.run(
        [str(cj_report), args[0], batch_id, *args[1:], "--db", str(db), *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=REPORT_ENV,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def dense_diagonal() -> None:
    """Make this process's finalization hand rule 3a the dense ``n x n`` diagonal matrix
    when the posterior has no covariance, as it did before rule 3a took the variances."""
    import cj_runner.services.finalize as finalize

    project = finalize.project_grades

    def dense(*args: Any, covariance: Any = None, **kw: Any) -> Any:
        if covariance is not None and np.ndim(covariance) == 1:
            covariance = np.diag(covariance)
        return project(*args, covariance=covariance, **kw)

    finalize.project_grades = dense  # type: ignore[assignment]


def graded_students(db: Path, batch_id: str) -> int:
    """Students with a projected grade in the batch."""
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM grade_projections"
            " WHERE batch_id = ? AND projected_grade IS NOT NULL",
            (batch_id,),
        ).fetchone()
    return int(row[0])


def peak_memory(n: int, anchors: bool = False, dense: bool = False) -> dict[str, Any]:
    """Run an ``n``-essay batch in a child process (``anchors``: with 12 anchors, grades
    projected; ``dense``: the dense diagonal covariance of before); its peak RSS and time."""
    code = (
        "import json, resource, sys, tempfile, time; from pathlib import Path;"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
        "import bench_scale as b;"
        + ("b.dense_diagonal();" if dense else "")
        + "d = tempfile.mkdtemp(); t = time.perf_counter();"
        f"db, bid, s, last, c = b.run(Path(d), {n}, anchors={anchors});"
        "g = b.graded_students(db, bid);"
        "print(json.dumps({'seconds': s, 'cpu': c, 'graded': g,"
        " 'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def throughput_postgres(server: str, sizes: tuple[int, ...]) -> int:
    """(a) on PostgreSQL: calls/s, CPU and the recorder's transactions."""
    with tempfile.TemporaryDirectory() as folder:
        print(f"(a) on PostgreSQL, zero-latency mock, {CPE} comparisons per essay ({load()})")
        for n in sizes:
            with Breakdown() as parts:
                _, seconds, last, cpu = run_postgres(server, Path(folder), n, parts)
            calls = n * CPE // 2
            print(
                f"    n={n:>5}: {calls:>6} calls in {seconds:6.1f} s = {calls / seconds:6.0f}/s "
                f"(to the last answer {calls / last:.0f}/s; CPU {cpu:.1f} s, event loop "
                f"{parts.cpu['loop']:.1f} s); {parts.commits} commits ({load()})"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 100 and 500 only")
    parser.add_argument(
        "--no-memory", action="store_true", help="leave out (d), the 10,000-essay batch"
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only (d); with --anchors the batch has 12 anchors and its grades are projected",
    )
    parser.add_argument("--anchors", action="store_true", help="(d) with anchors")
    parser.add_argument(
        "--dense-diagonal",
        action="store_true",
        help="(d) as before: rule 3a given the dense n x n diagonal covariance",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="(a) only, each batch on a new database of this PostgreSQL server "
        "(postgresql+asyncpg://USER@HOST:PORT/DB, DB an existing database)",
    )
    args = parser.parse_args(argv)
    if args.memory_only:
        return memory_section(args.anchors, args.dense_diagonal)
    sizes = (100, 500) if args.quick else (100, 500, 2000)
    if args.postgres:
        return throughput_postgres(args.postgres, sizes)
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        print(f"(a) calls/s, zero-latency mock, defaults, {CPE} comparisons per essay ({load()})")
        big: tuple[Path, str] | None = None
        for n in sizes:
            with Breakdown() as parts:
                db, batch_id, seconds, last, cpu = run(tmp, n, parts)
            calls = n * CPE // 2
            rate = calls / seconds
            target = ""
            if n == 2000:
                target = f"  (target >= 1,000/s: {'PASS' if rate >= 1000 else 'MISS'})"
                ok = ok and rate >= 1000
            big = (db, batch_id)  # the largest batch goes to (c)
            print(
                f"    n={n:>5}: {calls:>6} calls in {seconds:6.1f} s = {rate:6.0f}/s "
                f"(to the last answer {calls / last:.0f}/s; CPU {cpu:.1f} s){target}"
            )
            c = parts.cpu
            rest = cpu - c["plan_wave"] - c["end_wave"] - c["loop"]
            print(
                f"        CPU: selection {c['plan_wave']:.1f} s, refit {c['end_wave']:.1f} s "
                f"(worker threads), event loop {c['loop']:.1f} s, rest {rest:.1f} s "
                f"(database thread, hand-offs); {parts.commits} commits, "
                f"{-(-calls // 12)} waves"
            )
        print(f"(b) selection CPU ms per wave of 12 after 5 comparisons per essay ({load()})")
        for n in (100, 500, 2000, 5000, 10000):
            cells = [f"{s} {selection_ms(n, s):6.2f}" for s in ("infogain", "balanced", "random")]
            print(f"    n={n:>5}: " + "   ".join(cells))
            if n == 2000:
                ok = ok and selection_ms(n, "infogain") < 5.0
        if big is not None:
            db, batch_id = big
            print(
                f"(c) n={sizes[-1]} finalization and reports, seconds "
                f"(target at n=2000: < 2 s each; {load()})"
            )
            time_report(db, batch_id, ("html",), tmp)  # untimed: writes the bytecode cache
            fin = time_finalize(db, batch_id)
            ok = ok and fin < 2.0
            print(f"    finalize (in process)            wall {fin:5.2f}")
            for report in REPORTS:
                wall, cpu = time_report(db, batch_id, report, tmp)
                ok = ok and wall < 2.0
                print(f"    cj-report {' '.join(report):24s} wall {wall:5.2f}  CPU {cpu:5.2f}")
        if not args.quick and not args.no_memory:
            ok = memory_section(args.anchors, args.dense_diagonal) == 0 and ok
    return 0 if ok else 1


def memory_section(anchors: bool, dense: bool) -> int:
    """(d): peak RSS of the whole 10,000-essay batch in a child process."""
    what = " with 12 anchors, grades projected" if anchors else ""
    what += " (dense diagonal covariance, as before)" if dense else ""
    print(f"(d) n=10000{what}, {CPE} comparisons per essay, whole batch in a child ({load()})")
    mem = peak_memory(10_000, anchors, dense)
    print(
        f"    {mem['seconds']:.0f} s, CPU {mem['cpu']:.0f} s, {mem['graded']} students graded, "
        f"peak RSS {mem['peak_mb']:.0f} MB (target < 2,048 MB: "
        f"{'PASS' if mem['peak_mb'] < 2048 else 'MISS'}; {load()})"
    )
    return 0 if mem["peak_mb"] < 2048 else 1


if __name__ == "__main__":
    sys.exit(main())

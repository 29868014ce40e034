"""End-to-end workflow benchmark at the DEFAULT settings (issue 14 item 5).

Every run uses the default waves (``COMPARISONS_PER_STABILITY_CHECK_ITERATION=12``) and
strategy; only the budget is set, stability is off and ``MAX_ITERATIONS`` raised, so that
a run sends exactly its budget. The same mock judge and latency drive the runner and a
naive baseline written into this file (asyncio gather of random pairs, one JSONL line per
answer, one Bradley-Terry fit at the end).

1. Latency: n=100, 2,000 calls, ``MAX_CONCURRENT_REQUESTS`` 8 and 32, fixed 50 ms and
   lognormal (median 50 ms, sigma 0.5) latency: wall time / ideal. The ideal is
   ``ceil(calls / C) x 50 ms`` for fixed latency and the LPT makespan of the latencies the
   run drew on ``C`` slots for lognormal (targets: <= 1.15 fixed, <= 1.25 lognormal).
   Two walls: from the start of the run to its last answer (the calls), and to the end
   of the run (finalization included: the final posterior, reliability and grades). The
   runs at one ``C`` differ only in the judge's timing, so they must store the same
   comparisons, call for call: the benchmark checks it.
2. Throughput: zero latency, n = 100, 500, 2,000 (5 calls per essay), C = 8: calls/s
   (target >= 1,000/s at n = 2,000).
3. Selection: per-wave pair selection time against n (target < 5 ms at n = 2,000).
4. Scale: n = 10,000 at 10 calls per essay end to end in a child process: its peak memory
   (target < 2 GB).

Run: ``python benchmarks/bench_workflow.py`` (``--quick`` for a smaller smoke run,
``--sections 1`` for the latency part only). Timings on a shared machine depend on its
load: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import heapq
import json
import math
import multiprocessing
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: off
import cj_runner  # noqa: F401  (first: one BLAS thread, as the product runs)

# isort: on
import numpy as np

from cj_runner.config import settings_from_stored
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import (
    RunRequest,
    create_batch,
    plan_summary,
    prepare,
    stored_judge_config,
)
from cj_runner.services.executor import BatchExecutor, ProgressEvent
from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo

WORDS = [
    "school",
    "phone",
    "ban",
    "students",
    "learn",
    "focus",
    "teacher",
    "class",
    "argument",
    "because",
    "however",
]


def write_inventory(folder: Path, n: int, seed: int = 0) -> Path:
    """A manifest of ``n`` short synthetic essays with a ``true_score`` column."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["essay_id", "text", "true_score"])
        for i in range(n):
            text = " ".join(rng.choice(WORDS, size=40)) + f" essay {i}."
            writer.writerow([f"E{i:05d}", text, f"{rng.normal() * 1.5:.4f}"])
    return path


def write_profile(folder: Path, name: str, settings: dict[str, Any], judge: dict[str, Any]) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"settings": settings, "judge": judge}), encoding="utf-8")
    return path


async def run_batch(
    db: Path, inventory: Path, profile: Path, assignment_id: str | None = None
) -> tuple[str, float, float]:
    """Create and run one batch (with the anchors of ``assignment_id``, grades projected as
    ``cj-run execute`` does); returns (batch id, seconds in the run, seconds to its last
    answer)."""
    store = await open_store(resolve_db_url(str(db)))
    try:
        request = RunRequest(inventory=inventory, profile=str(profile), assignment_id=assignment_id)
        prepared = await prepare(store, request)
        batch_id = await create_batch(store, prepared, plan_summary(prepared))
        batch = await repo.find_batch(store, batch_id)
        nodes = await repo.load_nodes(store, batch_id)
        judge = build_judge(stored_judge_config(batch))
        last_answer = [0.0]

        def progress(event: ProgressEvent) -> None:
            if event.kind == "call":
                last_answer[0] = time.perf_counter()

        executor = BatchExecutor(
            store,
            batch,
            nodes,
            judge,
            settings_from_stored(batch.settings),
            use_cache=False,
            progress=progress,
            grade_scale=prepared.grade_scale,
        )
        started = time.perf_counter()
        result = await executor.run()
        elapsed = time.perf_counter() - started
        await judge.aclose()
        assert result.status == "COMPLETED", result
        return batch_id, elapsed, last_answer[0] - started
    finally:
        await store.close()


def lpt_makespan(latencies: list[float], slots: int) -> float:
    """Makespan of the longest-processing-time-first schedule on ``slots`` machines."""
    loads = [0.0] * slots
    heapq.heapify(loads)
    for value in sorted(latencies, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + value)
    return max(loads)


def stored_comparisons(db: Path, batch_id: str) -> list[tuple[Any, ...]]:
    """What the batch asked and was answered, call for call: no times, no ids, and whether
    a call was sent but not its number (the order calls leave in is timing)."""
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT slot, attempt, call_no IS NOT NULL, a_idx, b_idx, mode, wave, status, "
                "winner "
                "FROM comparisons WHERE batch_id=? ORDER BY slot, attempt",
                (batch_id,),
            )
        )


def run_latencies(db: Path, batch_id: str) -> list[float]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT latency_s FROM comparisons WHERE batch_id=? AND call_no IS NOT NULL",
            (batch_id,),
        ).fetchall()
    return [float(r[0] or 0.0) for r in rows]


def judge_config(distribution: str, seed: int = 2) -> dict[str, Any]:
    return {
        "kind": "mock",
        "seed": seed,
        "latency": {"distribution": distribution, "median_ms": 50, "sigma": 0.5},
    }


def default_settings(budget: int, concurrency: int, seed: int = 2) -> dict[str, Any]:
    """The defaults, with a budget that binds: stability off, iterations unbounded."""
    return {
        "MAX_PAIRWISE_COMPARISONS": budget,
        "SCORE_STABILITY_THRESHOLD": 0.0,
        "MAX_ITERATIONS": 1_000_000,
        "MAX_CONCURRENT_REQUESTS": concurrency,
        "SEED": seed,
    }


def ideal_of(latencies: list[float], distribution: str, slots: int) -> float:
    if distribution == "fixed":
        return math.ceil(len(latencies) / slots) * 0.050
    return lpt_makespan(latencies, slots)


async def naive_baseline(
    inventory: Path, judge_cfg: dict[str, Any], calls: int, slots: int, out: Path
) -> tuple[float, float, list[float]]:
    """What a 60-line script does: random pairs, gather, JSONL, one fit at the end."""
    from cj_runner.core.bt import fit_bt
    from cj_runner.judges.base import EssayText, JudgeRequest
    from cj_runner.judges.config import judge_config_from_mapping

    with inventory.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    essays = [EssayText(r["essay_id"], r["text"], checksum=r["essay_id"]) for r in rows]
    judge = build_judge(judge_config_from_mapping(judge_cfg, "bench"))
    rng = random.Random(0)
    pairs = [tuple(rng.sample(range(len(essays)), 2)) for _ in range(calls)]
    gate = asyncio.Semaphore(slots)
    latencies: list[float] = []
    started = time.perf_counter()
    with out.open("w", encoding="utf-8") as sink:

        async def ask(a: int, b: int) -> None:
            async with gate:
                verdict = await judge.judge(JudgeRequest(essay_a=essays[a], essay_b=essays[b]))
            latencies.append(verdict.latency_s or 0.0)
            sink.write(json.dumps({"a": a, "b": b, "winner": verdict.winner}) + "\n")

        await asyncio.gather(*(ask(a, b) for a, b in pairs))
    answered = time.perf_counter() - started
    first, second, won = [], [], []
    with out.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            first.append(row["a"])
            second.append(row["b"])
            won.append(row["winner"] == "A")
    fit_bt(len(essays), np.array(first), np.array(second), np.array(won))
    elapsed = time.perf_counter() - started
    await judge.aclose()
    return elapsed, answered, latencies


def bench_latency(tmp: Path, distribution: str, slots: int, calls: int) -> dict[str, Any]:
    inventory = write_inventory(tmp / "inv_latency", 100, seed=2)
    name = f"latency_{distribution}_{slots}"
    profile = write_profile(tmp, name, default_settings(calls, slots), judge_config(distribution))
    db = tmp / f"{name}.db"
    batch_id, elapsed, answered = asyncio.run(run_batch(db, inventory, profile))
    latencies = run_latencies(db, batch_id)
    ideal = ideal_of(latencies, distribution, slots)
    naive_s, naive_answered, naive_lat = asyncio.run(
        naive_baseline(inventory, judge_config(distribution), calls, slots, tmp / f"{name}.jsonl")
    )
    naive_ideal = ideal_of(naive_lat, distribution, slots)
    return {
        "latency": distribution,
        "slots": slots,
        "calls": len(latencies),
        "wall_s": elapsed,
        "answered_s": answered,
        "ideal_s": ideal,
        "ratio": elapsed / ideal,
        "answered_ratio": answered / ideal,
        "naive_ratio": naive_s / naive_ideal,
        "naive_answered_ratio": naive_answered / naive_ideal,
        "comparisons": stored_comparisons(db, batch_id),
    }


def bench_throughput(tmp: Path, essays: int, calls_per_essay: int) -> dict[str, Any]:
    inventory = write_inventory(tmp / f"inv_{essays}", essays)
    budget = essays * calls_per_essay
    profile = write_profile(
        tmp, f"zero_{essays}", default_settings(budget, 8, seed=1), judge_config("zero", 1)
    )
    db = tmp / f"zero_{essays}.db"
    _, elapsed, _ = asyncio.run(run_batch(db, inventory, profile))
    naive_s, _, _ = asyncio.run(
        naive_baseline(inventory, judge_config("zero", 1), budget, 8, tmp / f"z{essays}.jsonl")
    )
    return {
        "essays": essays,
        "calls": budget,
        "per_second": budget / elapsed,
        "naive_per_second": budget / naive_s,
    }


def bench_selection(essays: int, waves: int = 30) -> float:
    """Median seconds of one wave's ``balanced`` pair selection at ``essays`` nodes, ~5
    calls per essay."""
    from cj_runner.config import Settings
    from cj_runner.services.workflow_setup import workflow_from_settings

    # the default settings with the ``balanced`` strategy (the one this section has always
    # measured; bench_scale.py (b) measures ``infogain``, the default)
    settings = Settings(MATCHING_STRATEGY="balanced")
    wf = workflow_from_settings(settings, n_nodes=essays, seed=1, total_budget=10**9)
    rng = np.random.default_rng(0)
    while wf.successes < essays * 5 // 2:
        a, b = (int(x) for x in rng.integers(0, essays, 2))
        if a != b:
            wf.record_success(a, b, "A" if rng.random() < 0.5 else "B")
    times = []
    for _ in range(waves):
        started = time.perf_counter()
        pairs = wf.plan_wave()
        times.append(time.perf_counter() - started)
        for p in pairs:
            wf.record_success(p.a, p.b, "A")
        wf.waves_completed += 1
    return float(np.median(times))


def _scale_child(folder: str, essays: int, calls_per_essay: int, out: Any) -> None:
    tmp = Path(folder)
    inventory = write_inventory(tmp / f"inv_{essays}", essays)
    profile = write_profile(
        tmp,
        f"scale_{essays}",
        default_settings(essays * calls_per_essay, 8, seed=3),
        judge_config("zero", 3),
    )
    _, elapsed, _ = asyncio.run(run_batch(tmp / f"scale_{essays}.db", inventory, profile))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.send({"seconds": elapsed, "peak_mb": peak_kb / 1024})


def bench_scale(tmp: Path, essays: int, calls_per_essay: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_scale_child, args=(str(tmp), essays, calls_per_essay, child))
    proc.start()
    result: dict[str, Any] = parent.recv()
    proc.join()
    return {"essays": essays, "calls": essays * calls_per_essay, **result}


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def section_latency(tmp: Path, calls: int) -> bool:
    print(
        f"1. latency: n=100, {calls} calls, default settings; wall / ideal to the last "
        "answer and to the end of the run (runner | naive)"
    )
    ok = True
    stored: dict[int, list[tuple[Any, ...]]] = {}
    for distribution, target in (("fixed", 1.15), ("lognormal", 1.25)):
        for slots in (8, 32):
            r = bench_latency(tmp, distribution, slots, calls)
            good = r["answered_ratio"] <= target
            ok = ok and good
            print(
                f"   {distribution:9s} C={slots:2d}: {r['calls']} calls, ideal "
                f"{r['ideal_s']:.2f} s; last answer {r['answered_s']:.2f} s, ratio "
                f"{r['answered_ratio']:.3f} | naive {r['naive_answered_ratio']:.3f}  "
                f"(target <= {target}: {mark(good)}); end of run {r['wall_s']:.2f} s, "
                f"ratio {r['ratio']:.3f} | naive {r['naive_ratio']:.3f}"
            )
            same = stored.setdefault(slots, r["comparisons"]) == r["comparisons"]
            ok = ok and same
            if distribution != "fixed":
                print(
                    f"   C={slots:2d}: fixed and lognormal latency stored the same "
                    f"comparisons, call for call: {'yes' if same else 'NO'}"
                )
    return ok


def section_throughput(tmp: Path, sizes: tuple[int, ...]) -> bool:
    print("2. throughput: zero latency, 5 calls per essay, C=8 (runner | naive)")
    ok = True
    for essays in sizes:
        r = bench_throughput(tmp, essays, 5)
        line = (
            f"   n={essays:5d}: {r['calls']} calls, {r['per_second']:,.0f} calls/s"
            f" | naive {r['naive_per_second']:,.0f} calls/s"
        )
        if essays == 2_000:
            good = r["per_second"] >= 1000
            ok = ok and good
            line += f"  (target >= 1,000/s: {mark(good)})"
        print(line)
    return ok


def section_selection() -> bool:
    print("3. selection: median time of one wave's pair selection (waves of 12)")
    ok = True
    for essays in (100, 500, 2_000, 10_000):
        seconds = bench_selection(essays)
        line = f"   n={essays:6d}: {seconds * 1000:.2f} ms"
        if essays == 2_000:
            good = seconds < 0.005
            ok = ok and good
            line += f"  (target < 5 ms: {mark(good)})"
        print(line)
    return ok


def section_scale(tmp: Path, scale: tuple[int, int]) -> bool:
    print(f"4. scale: n={scale[0]:,} at {scale[1]} calls per essay, zero latency")
    r = bench_scale(tmp, *scale)
    good = bool(r["peak_mb"] < 2048)
    print(
        f"   {r['calls']:,} calls in {r['seconds']:.1f} s, peak memory "
        f"{r['peak_mb']:,.0f} MB  (target < 2 GB: {mark(good)})"
    )
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    parser.add_argument(
        "--sections",
        default="1,2,3,4",
        help="which parts to run, e.g. 1 or 1,3 (default: all four)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    sections = {int(x) for x in args.sections.split(",") if x.strip()}
    calls = 300 if quick else 2_000
    sizes = (100, 500) if quick else (100, 500, 2_000)
    scale = (1_000, 10) if quick else (10_000, 10)
    ok = True
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if 1 in sections:
            ok = section_latency(tmp, calls) and ok
        if 2 in sections:
            ok = section_throughput(tmp, sizes) and ok
        if 3 in sections:
            ok = section_selection() and ok
        if 4 in sections:
            ok = section_scale(tmp, scale) and ok
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

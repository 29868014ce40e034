"""Crash test: kill ``cj-run`` with SIGKILL at random moments, resume, check nothing is lost.

One *round* runs the regular example (24 essays, no anchors, 276 coverage + 276 resampling
comparisons) with a mock judge that has latency and transient errors, twice:

* a reference run, uninterrupted;
* a killed run with the same seed: ``cj-run execute``, then ``cj-run resume`` again and
  again, each process killed with SIGKILL once the batch has sent a chosen number of calls
  (kill points spread at random over the whole run, plus a random delay of a few
  milliseconds so kills land in flight, mid-commit and mid-refit), and a last ``resume``
  that runs to the end.

After every kill the database must pass ``PRAGMA integrity_check``; every answer stored
before the kill must still be there unchanged (no answered comparison lost); no comparison
may have two answers (none duplicated); the calls stored are exactly ``1..calls_sent``
with ``calls_sent <= budget``. At the end the batch is ``COMPLETED`` and its answers are
the reference run's, comparison for comparison (ordered pair, mode, wave and winner). What
may differ is documented in docs/reliability.md: the ``lost`` rows (calls in flight at
a kill, counted and asked again) and the call numbers after them.

The processes are forked from a *fork server* that has imported cj-runner once, so a kill
and restart costs milliseconds instead of an interpreter start; each child runs the real
``cj-run`` command (``cj_runner.cli.run:app``) with its own arguments.
``--spawn`` starts every process with the ``cj-run`` console script instead.

Run from the repository root::

    python benchmarks/crash_resume.py --rounds 10 --kills 25
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
REGULAR24 = ROOT / "examples" / "regular24" / "manifest.csv"

_FORK_SERVER = r"""
import json, os, signal, sys, traceback
from cj_runner.cli.run import app

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        fd = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 1
        try:
            app(args=request["argv"], prog_name="cj-run")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        with open(request["rc"], "w") as rc:
            rc.write(str(code))
        os._exit(code)
    sys.stdout.write(f"{pid}\n")
    sys.stdout.flush()
"""


def clean_env() -> dict[str, str]:
    """The environment without the user's CJ_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CJ_")}


@dataclass
class Child:
    """One ``cj-run`` process."""

    pid: int
    out: Path
    rc_file: Path
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL, then wait until the process is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def wait(self, timeout: float) -> int | None:
        """The exit code (``None``: killed, or still running at the timeout)."""
        if self.popen is not None:
            try:
                code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            return code if code >= 0 else None
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.alive():
            return None
        try:
            return int(self.rc_file.read_text())
        except (OSError, ValueError):
            return None

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""


class Launcher:
    """Starts ``cj-run`` processes: forked from a warm fork server, or spawned."""

    def __init__(self, workdir: Path, *, spawn: bool = False) -> None:
        self.workdir = workdir
        self.spawn = spawn
        self._server: subprocess.Popen[str] | None = None
        self._count = 0

    def __enter__(self) -> Launcher:
        if not self.spawn:
            self._server = subprocess.Popen(
                [sys.executable, "-c", _FORK_SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=clean_env(),
                cwd=self.workdir,
            )
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            try:
                self._server.wait(10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            if self._server.stdout is not None:
                self._server.stdout.close()
            self._server = None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        """Start ``cj-run ARGV``."""
        self._count += 1
        out = self.workdir / f"run{self._count}.out"
        rc = self.workdir / f"run{self._count}.rc"
        if self.spawn:
            exe = shutil.which("cj-run") or str(Path(sys.executable).parent / "cj-run")
            handle = out.open("wb")
            popen = subprocess.Popen(
                [exe, *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**clean_env(), **(env or {})},
                cwd=self.workdir,
            )
            handle.close()
            return Child(popen.pid, out, rc, popen)
        server = self._server
        assert server is not None and server.stdin is not None and server.stdout is not None
        request = {
            "argv": list(argv),
            "env": env or {},
            "cwd": str(self.workdir),
            "out": str(out),
            "rc": str(rc),
        }
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        return Child(int(server.stdout.readline()), out, rc)


# ---------------------------------------------------------------- the batch and its checks


def crash_profile(
    folder: Path,
    *,
    seed: int,
    latency_ms: float = 4.0,
    budget: int = 1000,
    errors: dict[str, float] | None = None,
    judge: dict[str, Any] | None = None,
) -> Path:
    """A CJ profile: regular batch shape (stability off, one resampling pass), a budget
    that does not bind, and a mock judge with fixed latency and transient errors."""
    import yaml

    errors = (
        {"timeout": 0.02, "rate_limit": 0.02, "server_error": 0.02, "malformed": 0.01}
        if errors is None
        else errors
    )
    profile = {
        "name": "crash",
        "settings": {
            "MAX_PAIRWISE_COMPARISONS": budget,
            "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 12,
            "SCORE_STABILITY_THRESHOLD": 0.0,
            "MAX_ITERATIONS": 500,
            "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 1,
            "MAX_CONCURRENT_REQUESTS": 8,
            "RETRY_BASE_DELAY_S": 0.002,
            "RETRY_MAX_DELAY_S": 0.01,
            "USE_ANCHORS": False,
            "SEED": seed,
        },
        "judge": judge
        or {
            "kind": "mock",
            "name": "mock-crash",
            "seed": seed,
            "noise": 1.0,
            "position_bias": 0.05,
            "latency": {"distribution": "fixed", "median_ms": latency_ms},
            "errors": errors,
        },
    }
    path = folder / "crash.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


@dataclass
class Snapshot:
    """What a database holds about one batch."""

    status: str | None
    budget: int
    calls_sent: int
    call_nos: list[int]
    successes: dict[tuple[int, int], tuple[Any, ...]]
    lost: int
    integrity: str


_SUCCESS_COLUMNS = (
    "slot, attempt, call_no, a_idx, b_idx, mode, wave, winner, confidence, justification, "
    "tokens_in, tokens_out, repeat_index, sent_at, received_at, latency_s"
)


def snapshot(db: Path, batch: str) -> Snapshot:
    """Read the batch back (a plain sqlite3 reader, as any tool would)."""
    with sqlite3.connect(db, timeout=30) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        try:
            row = conn.execute(
                "SELECT b.id, b.status, s.total_budget, s.calls_sent FROM batches b "
                "JOIN batch_state s ON s.batch_id = b.id WHERE b.id = ? OR b.name = ?",
                (batch, batch),
            ).fetchone()
        except sqlite3.OperationalError:  # no schema yet: killed during the first migration
            row = None
        if row is None:
            return Snapshot(None, 0, 0, [], {}, 0, integrity)
        batch_id = row[0]
        call_nos = [
            r[0]
            for r in conn.execute(
                "SELECT call_no FROM comparisons WHERE batch_id=? AND call_no IS NOT NULL "
                "ORDER BY call_no",
                (batch_id,),
            )
        ]
        successes: dict[tuple[int, int], tuple[Any, ...]] = {}
        for r in conn.execute(
            f"SELECT {_SUCCESS_COLUMNS} FROM comparisons WHERE batch_id=? AND status='success'",
            (batch_id,),
        ):
            successes[(r[0], r[1])] = tuple(r)
        lost = conn.execute(
            "SELECT COUNT(*) FROM comparisons WHERE batch_id=? AND error_kind='lost'",
            (batch_id,),
        ).fetchone()[0]
    return Snapshot(row[1], row[2], row[3], call_nos, successes, lost, integrity)


def node_scores(db: Path, batch: str) -> list[tuple[str, float | None, float | None]]:
    """``(essay_id, score, se)`` of every node, rounded to 9 decimals."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "SELECT n.essay_id, n.score, n.se FROM nodes n JOIN batches b ON b.id = n.batch_id "
            "WHERE b.id = ? OR b.name = ? ORDER BY n.idx",
            (batch, batch),
        ).fetchall()
    return [
        (r[0], None if r[1] is None else round(r[1], 9), None if r[2] is None else round(r[2], 9))
        for r in rows
    ]


def calls_so_far(db: Path) -> int:
    """The highest call number stored (0 before the first call or the first table)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            value = conn.execute("SELECT MAX(call_no) FROM comparisons").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(value or 0)


def check_invariants(snap: Snapshot, before: Snapshot | None) -> list[str]:
    """Problems with ``snap`` (empty when every invariant holds)."""
    problems: list[str] = []
    if snap.integrity != "ok":
        problems.append(f"integrity_check: {snap.integrity}")
    if snap.status is None:
        return problems
    n = len(snap.call_nos)
    if snap.call_nos != list(range(1, n + 1)):
        problems.append("call numbers are not exactly 1..n")
    if n != snap.calls_sent:
        problems.append(f"{n} calls stored but batch_state.calls_sent={snap.calls_sent}")
    if n > snap.budget:
        problems.append(f"{n} calls sent, above the budget {snap.budget}")
    slots = Counter(slot for slot, _ in snap.successes)
    twice = [slot for slot, k in slots.items() if k > 1]
    if twice:
        problems.append(f"slots answered twice: {twice[:5]}")
    asked = Counter((r[6], r[3], r[4]) for r in snap.successes.values())
    repeated = [key for key, k in asked.items() if k > 1]
    if repeated:
        problems.append(f"(wave, a, b) answered twice: {repeated[:5]}")
    if before is not None:
        gone = [k for k in before.successes if k not in snap.successes]
        changed = [
            k for k, v in before.successes.items() if k in snap.successes and snap.successes[k] != v
        ]
        if gone:
            problems.append(f"answers lost: {gone[:5]}")
        if changed:
            problems.append(f"answers changed: {changed[:5]}")
    return problems


def comparison_multiset(snap: Snapshot) -> Counter[tuple[int, int, str, int, str]]:
    """``(a_idx, b_idx, mode, wave, winner)`` of every answered comparison."""
    return Counter((r[3], r[4], r[5], r[6], r[7]) for r in snap.successes.values())


@dataclass
class RoundResult:
    """One round: a reference run and a killed-and-resumed run with the same seed."""

    seed: int
    kills: int = 0
    kills_mid_run: int = 0
    lost_calls: int = 0
    calls_reference: int = 0
    calls_killed: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _run_to_end(launcher: Launcher, argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    child = launcher.start(argv)
    code = child.wait(timeout)
    if code is None and child.alive():
        child.kill()
    return code, child.output()


class Gate(Protocol):
    """A judge server that can hold calls (see ``tests/hostile_server.py``)."""

    requests: int

    def hold(self, from_request: int) -> None: ...

    def release(self) -> None: ...

    def wait_for(self, requests: int) -> None: ...


#: With a gate, the calls from this many after a kill point on are held: the process
#: cannot finish before it is killed, and the kill still lands anywhere in between.
HOLD_AHEAD = 6


def crash_round(
    workdir: Path,
    launcher: Launcher,
    *,
    seed: int,
    kills: int,
    rng: random.Random,
    latency_ms: float = 4.0,
    max_extra_delay_s: float = 0.02,
    early_kills: int = 2,
    timeout: float = 120.0,
    judge: dict[str, Any] | None = None,
    gate: Gate | None = None,
) -> RoundResult:
    """Run one reference and one killed run; see the module docstring.

    With ``judge`` (a judge profile for a server) and its ``gate``, a kill point is a
    rendezvous rather than a race: the server holds the calls from ``HOLD_AHEAD`` after
    the kill point on, so on a slow machine the process is still running when the kill
    comes (the test suite runs this way; the benchmark races the mock judge).
    """
    started = time.perf_counter()
    result = RoundResult(seed=seed)
    workdir.mkdir(parents=True, exist_ok=True)
    profile = crash_profile(workdir, seed=seed, latency_ms=latency_ms, judge=judge)
    execute = ["execute", "--inventory", str(REGULAR24), "--profile", str(profile), "--quiet"]

    ref_db = workdir / "reference.db"
    code, out = _run_to_end(
        launcher, [*execute, "--db", str(ref_db), "--batch-name", "ref"], timeout
    )
    reference = snapshot(ref_db, "ref")
    if code != 0 or reference.status != "COMPLETED":
        result.problems.append(f"reference run: exit {code}, status {reference.status}: {out}")
        return result
    result.calls_reference = reference.calls_sent

    db = workdir / "killed.db"
    # kill points: stratified over the reference run's calls, so they cover the whole run;
    # early kills (a short random time after a start) land in start-up and rebuild too
    total = reference.calls_sent
    plan: list[int | None] = [
        int(total * (i + rng.random()) / (kills + 1)) + 1 for i in range(kills)
    ]
    for _ in range(early_kills):
        plan.insert(rng.randrange(len(plan) + 1), None)
    previous: Snapshot | None = None
    first_request = gate.requests if gate is not None else 0
    for target in plan:
        argv = (
            [*execute, "--db", str(db), "--batch-name", "crash"]
            if previous is None
            else ["resume", "crash", "--db", str(db), "--quiet"]
        )
        if gate is not None and target is not None:
            # requests of the killed run so far: calls sent, lost ones included
            target = max(first_request + target, gate.requests + 1)
            gate.hold(target + HOLD_AHEAD)
        elif gate is not None:  # an early kill: the run cannot end before it either
            gate.hold(gate.requests + HOLD_AHEAD)
        child = launcher.start(argv)
        if target is None:
            time.sleep(rng.uniform(0.0, 0.25))
        elif gate is not None:
            gate.wait_for(target)
            time.sleep(rng.uniform(0.0, max_extra_delay_s))
        else:
            target = max(target, (previous.calls_sent if previous else 0) + 1)
            while child.alive() and calls_so_far(db) < target:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, max_extra_delay_s))
        if child.alive():
            child.kill()
            result.kills += 1
            result.kills_mid_run += int(target is not None)
            if gate is not None:
                gate.release()
        else:
            code = child.wait(5)
            if code != 0:
                result.problems.append(f"run exited with {code}: {child.output()[-2000:]}")
                return result
        snap = snapshot(db, "crash") if db.exists() else None
        if snap is None or snap.status is None:
            continue  # killed before the batch was stored: execute again
        result.problems.extend(check_invariants(snap, previous))
        if result.problems:
            return result
        previous = snap
        if snap.status == "COMPLETED":
            break

    if gate is not None:
        gate.release()
    if previous is None or previous.status != "COMPLETED":
        argv = (
            ["resume", "crash", "--db", str(db), "--quiet"]
            if previous is not None
            else [*execute, "--db", str(db), "--batch-name", "crash"]
        )
        code, out = _run_to_end(launcher, argv, timeout)
        if code != 0:
            result.problems.append(f"final run: exit {code}: {out[-2000:]}")
            return result
    final = snapshot(db, "crash")
    result.problems.extend(check_invariants(final, previous))
    if final.status != "COMPLETED":
        result.problems.append(f"final status {final.status}")
    result.lost_calls = final.lost
    result.calls_killed = final.calls_sent
    if comparison_multiset(final) != comparison_multiset(reference):
        missing = comparison_multiset(reference) - comparison_multiset(final)
        extra = comparison_multiset(final) - comparison_multiset(reference)
        result.problems.append(
            f"answers differ from the uninterrupted run: missing {list(missing)[:3]}, "
            f"extra {list(extra)[:3]}"
        )
    if node_scores(db, "crash") != node_scores(ref_db, "ref"):
        result.problems.append("final scores differ from the uninterrupted run")
    if final.calls_sent != reference.calls_sent + final.lost:
        result.problems.append(
            f"calls: killed run {final.calls_sent} != reference {reference.calls_sent} "
            f"+ lost {final.lost}"
        )
    result.seconds = time.perf_counter() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="independent rounds (seeds)")
    parser.add_argument("--kills", type=int, default=25, help="kill points per round")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round")
    parser.add_argument("--latency-ms", type=float, default=4.0, help="mock judge latency")
    parser.add_argument(
        "--spawn", action="store_true", help="start every process as the cj-run script"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cj-crash-"))
    failed = 0
    total_kills = 0
    try:
        with Launcher(tmp, spawn=args.spawn) as launcher:
            for k in range(args.rounds):
                seed = args.seed + k
                result = crash_round(
                    tmp / f"round{k}",
                    launcher,
                    seed=seed,
                    kills=args.kills,
                    rng=random.Random(seed),
                    latency_ms=args.latency_ms,
                )
                total_kills += result.kills
                failed += int(not result.ok)
                status = "ok" if result.ok else "FAIL"
                print(
                    f"round {k} seed {seed}: {status}  kills {result.kills} "
                    f"(mid-run {result.kills_mid_run}), lost calls {result.lost_calls}, "
                    f"calls {result.calls_killed} vs {result.calls_reference} uninterrupted, "
                    f"{result.seconds:.1f} s"
                )
                for problem in result.problems:
                    print(f"    {problem}")
    finally:
        if args.keep:
            print(f"databases kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.rounds - failed}/{args.rounds} rounds ok, {total_kills} kills")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

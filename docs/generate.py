"""Write the real output of every command shown in the README and the docs pages.

    python docs/generate.py            # rewrite README.md and docs/*.md in place
    python docs/generate.py --check    # change nothing; exit 1 naming the stale files

Every fenced block marked ``console`` holds commands (lines starting with ``$ ``), each
followed by its output. This script runs the commands of each page in order, in a
temporary folder holding a copy of ``examples/`` and a fresh SQLite database, with a
100-column terminal, the mock judge and the seeds of the shipped profiles, and replaces
each command's output by what it prints now (stdout and stderr, as a terminal shows
them). Batch ids and timestamps, which change on every run, are replaced by fixed
stand-ins of the same length, so tables keep their shape; a cohort worker's id and
the durations in its lines are replaced too. The pages show a local server on port
8765 (``DEMO_PORT``); the commands run with a port the system gives as free instead, so
two runs at once (two test suites) do not collide, and the output shows 8765 again.

README.md runs first on an empty database. Every docs page then starts from a copy of the
database the README left behind, plus the LOWER5 small net as ``lower5-demo`` (so the
batches ``phones-demo`` and ``lower5-demo`` exist). Pages without console blocks are left
alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python docs/generate.py"
COLUMNS = 100
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.DOTALL | re.MULTILINE)
DOCS_SETUP = [
    "cj-run execute --inventory examples/lower5/manifest.csv --profile mock_lower5 "
    "--batch-name lower5-demo --quiet",
]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z)?")
BATCH_ID = re.compile(r"(?<![0-9a-zA-Z])[0-9a-f]{12}(?![0-9a-zA-Z])")
# A cohort worker's id (host:pid:tag) and a batch's duration in its lines (cj-run worker).
WORKER_ID = re.compile(r"(?<=worker )[^\s:]+:\d+:[0-9a-f]{8}\b")
WORKER_ID_CSV = re.compile(r"(?<=,)[^\s,:]+:\d+:[0-9a-f]{8}(?=,)")
DURATION = re.compile(r"(?<=\) in )\d+\.\d s$", re.MULTILINE)
DEMO_PORT = 8765


def pages(root: Path) -> list[Path]:
    """The README first, then the docs pages in name order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


class Normaliser:
    """Replace what changes from run to run by stand-ins of the same length."""

    def __init__(self, known_ids: Callable[[], set[str]]) -> None:
        self.known_ids = known_ids
        self.ids: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        known = self.known_ids()
        for found in BATCH_ID.findall(text):
            if found in known and found not in self.ids:
                seed = f"batch-{len(self.ids) + 1}".encode()
                self.ids[found] = hashlib.sha256(seed).hexdigest()[:12]
        text = BATCH_ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), text)
        text = WORKER_ID.sub("host:4242:0f1e2d3c", text)
        text = WORKER_ID_CSV.sub("host:4242:0f1e2d3c", text)
        text = DURATION.sub("1.0 s", text)
        return TIMESTAMP.sub(lambda m: _fixed_time(m.group(0)), text)


def _fixed_time(found: str) -> str:
    fixed = "2025-01-15T09:30:00.000000+00:00"
    out = "".join(f if c.isdigit() else c for c, f in zip(found, fixed, strict=False))
    return out[: len(found)]


class Session:
    """A working folder with the examples and a database; runs commands like a terminal."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "cj_runner.db"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CJ_", "COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR"))
        }
        bin_dir = str(Path(sys.executable).parent)
        self.env.update(
            CJ_DB=str(self.db),
            COLUMNS=str(COLUMNS),
            LINES="50",
            TERM="dumb",
            TZ="UTC",
            PYTHONHASHSEED="0",
            PATH=bin_dir + os.pathsep + self.env.get("PATH", ""),
        )
        self.normalise = Normaliser(self.batch_ids)
        self.port = _free_port()

    def batch_ids(self) -> set[str]:
        if not self.db.exists():
            return set()
        import sqlite3

        with sqlite3.connect(self.db) as con:
            try:
                return {row[0] for row in con.execute("SELECT id FROM batches")}
            except sqlite3.OperationalError:
                return set()

    def run(self, command: str) -> str:
        demo_port = re.compile(rf"(?<![0-9]){DEMO_PORT}(?![0-9])")
        command = demo_port.sub(str(self.port), command)
        done = subprocess.run(
            ["bash", "-c", command + " 2>&1"],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        text = done.stdout.decode("utf-8", errors="replace")
        text = re.sub(rf"(?<=:){self.port}(?![0-9])", str(DEMO_PORT), text)  # host:port
        lines = [line.rstrip() for line in text.splitlines()]
        return self.normalise("\n".join(lines).rstrip("\n").replace(str(self.folder), "."))


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def render_page(text: str, session: Session) -> str:
    """The page with every console block's output replaced by what its commands print."""

    def block(match: re.Match[str]) -> str:
        commands = [line for line in match.group(1).splitlines() if line.startswith("$ ")]
        out: list[str] = []
        for line in commands:
            out.append(line)
            printed = session.run(line[2:])
            if printed:
                out.append(printed)
        return "```console\n" + "\n".join(out) + "\n```"

    return BLOCK.sub(block, text)


def _start(folder: Path, root: Path, db_from: Path | None) -> Session:
    folder.mkdir()
    shutil.copytree(root / "examples", folder / "examples")
    session = Session(folder)
    if db_from is not None:
        for part in db_from.parent.glob(db_from.name + "*"):  # the -wal and -shm files too
            shutil.copy2(part, folder / (session.db.name + part.name[len(db_from.name) :]))
    return session


def render_all(root: Path = ROOT) -> dict[Path, str]:
    """Each page with console blocks, as it should read now (nothing is written)."""
    result: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="cj-docs-") as tmp:
        work = Path(tmp)
        readme, *docs = pages(root)
        session = _start(work / "readme", root, None)
        result[readme] = render_page(readme.read_text(encoding="utf-8"), session)
        base = session
        for command in DOCS_SETUP:
            base.run(command)
        known = base.normalise.ids
        for index, page in enumerate(docs):
            text = page.read_text(encoding="utf-8")
            if not BLOCK.search(text):
                continue
            session = _start(work / f"page{index}", root, base.db)
            session.normalise.ids = dict(known)
            result[page] = render_page(text, session)
    return result


def stale(root: Path = ROOT) -> list[Path]:
    """The pages whose console outputs differ from what the commands print now."""
    return [
        page for page, text in render_all(root).items() if page.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    args = parser.parse_args(argv)
    rendered = render_all()
    changed = [p for p, text in rendered.items() if p.read_text(encoding="utf-8") != text]
    for page in changed:
        name = page.relative_to(ROOT)
        if args.check:
            print(f"stale: {name}")
        else:
            page.write_text(rendered[page], encoding="utf-8")
            print(f"updated: {name}")
    if args.check and changed:
        print(f"run `{COMMAND}` and commit the result")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

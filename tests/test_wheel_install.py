"""A plain wheel install, outside the checkout, ships its profiles and grade scales: the
example runs from there (register anchors, plan, a mock execute)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_the_example_runs_from_a_wheel_installed_outside_the_checkout(tmp_path: Path) -> None:
    # 1. build the wheel from a copy of the sources (no build/ or egg-info in the checkout)
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "cj_runner", src / "cj_runner", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CJ_", "PYTHON"))}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(src),
        ],
        tmp_path,
        env,
    )
    (wheel,) = dist.glob("cj_runner-*.whl")

    # 2. a fresh virtual environment; the dependencies come from this one's site-packages
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
        env,
    )

    # 3. run the example from a folder that is not the checkout and has no profiles/
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {**env, "CJ_DB": str(work / "cj.db"), "PATH": str(bindir) + os.pathsep + env["PATH"]}
    where = _run([str(python), "-c", "import cj_runner; print(cj_runner.__file__)"], work, env)
    assert Path(where.strip()).is_relative_to(venv), where
    assert not (work / "profiles").exists()
    out = _run(
        [
            str(bindir / "cj-anchors"),
            "register",
            "examples/anchors",
            "--assignment-id",
            "phones",
            "--grade-scale",
            "eng5",
            "--instructions",
            "examples/assignment/instructions.md",
            "--student-prompt",
            "examples/assignment/student_prompt.md",
            "--rubric",
            "examples/assignment/rubric.md",
        ],
        work,
        env,
    )
    assert "8 anchor(s) added" in out
    inventory = ["--inventory", "examples/regular24/manifest.csv", "--assignment-id", "phones"]
    plan = json.loads(
        _run(
            [
                str(bindir / "cj-run"),
                "plan",
                *inventory,
                "--profile",
                "mock_generic_batch",
                "--format",
                "json",
            ],
            work,
            env,
        )
    )
    assert plan["nodes"] == 32
    real = json.loads(
        _run(
            [str(bindir / "cj-run"), "plan", *inventory, "--judge", "openai", "--format", "json"],
            work,
            env,
        )
    )
    assert (real["judge"], real["judge_kind"]) == ("openai", "openai_compatible")
    summary = json.loads(
        _run(
            [
                str(bindir / "cj-run"),
                "execute",
                *inventory,
                "--profile",
                "mock_generic_batch",
                "--max-comparisons",
                "60",
                "--json",
            ],
            work,
            env,
        )
    )
    assert summary["status"] == "COMPLETED"
    assert summary["grades"]


def test_profiles_live_inside_the_package_only() -> None:
    """A top-level profiles/ folder would be found from the checkout but not shipped."""
    assert not (ROOT / "profiles").exists(), (
        "profiles ship inside the package: put them in cj_runner/profiles/"
    )
    shipped = {p.name for p in (ROOT / "cj_runner" / "profiles").glob("*.yaml")}
    assert {"default.yaml", "grade_scales.yaml", "openai.yaml", "mock_lower5.yaml"} <= shipped

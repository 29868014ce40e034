"""`cj-report html`: one self-contained page, checked as text and in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from tests.cli.helpers import LOWER5, REGULAR24, execute_json, register_example_anchors, report

SECTIONS = [
    "summary",
    "scores",
    "positions",
    "convergence",
    "degrees",
    "ranking",
    "grades",
    "fairness",
    "coverage",
]
PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CONSOLE_PROBLEMS = ("Uncaught", "ERROR:CONSOLE", "Content Security Policy")


@dataclass(frozen=True)
class Pages:
    db: Path
    regular_id: str
    lower5: Path
    regular: Path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Pages:
    """HTML reports of a LOWER5 small net and of a regular batch with anchors."""
    tmp = tmp_path_factory.mktemp("html")
    db = tmp / "cj.db"
    execute_json(db, ["--inventory", str(LOWER5), "--profile", "mock_lower5", "--batch-name", "l5"])
    register_example_anchors(db)
    regular = execute_json(
        db,
        [
            "--inventory",
            str(REGULAR24),
            "--assignment-id",
            "phones",
            "--profile",
            "mock_generic_batch",
            "--max-comparisons",
            "150",
        ],
    )
    out = {}
    for name, ref in (("lower5", "l5"), ("regular", regular["batch_id"])):
        target = tmp / f"{name}.html"
        result = report(["html", ref, "--db", str(db), "-o", str(target)])
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        out[name] = target
    return Pages(db, regular["batch_id"], out["lower5"], out["regular"])


def decoded_images(page: str) -> list[np.ndarray]:
    return [mpimg.imread(io.BytesIO(base64.b64decode(m)), format="png") for m in PNG.findall(page)]


def not_blank(pixels: np.ndarray) -> bool:
    """More than one distinct colour, and no colour covering 99% of the image."""
    rgb = np.asarray(pixels)
    if rgb.dtype.kind == "f":
        rgb = np.round(rgb * 255)
    rgb = rgb.astype(np.int64).reshape(-1, rgb.shape[-1] if rgb.ndim == 3 else 1)
    keys = np.zeros(len(rgb), dtype=np.int64)
    for channel in range(rgb.shape[1]):
        keys = keys * 256 + rgb[:, channel]
    counts = np.unique(keys, return_counts=True)[1]
    return len(counts) > 1 and counts.max() < 0.99 * len(keys)


# ---------------------------------------------------------------- as text


@pytest.mark.parametrize("which", ["lower5", "regular"])
def test_page_is_self_contained_with_every_section(pages: Pages, which: str) -> None:
    page = getattr(pages, which).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    # nothing is fetched: every src/href is inline data or an anchor on the page
    for attr in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:", "#")), attr
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the four plots are embedded PNGs that decode and are not blank
    images = decoded_images(page)
    assert len(images) == 4
    assert all(not_blank(img) for img in images)


def test_regular_page_shows_anchors_boundaries_and_tables(pages: Pages) -> None:
    page = pages.regular.read_text(encoding="utf-8")
    assert pages.regular_id in page
    for table in ("ranking-table", "anchors-table", "grades-table", "fairness-table"):
        assert f'id="{table}"' in page
    assert "waves-table" in page
    assert page.count("boundary ") == 5  # F|E .. B|A
    assert "anchor:anchor_05" in page
    assert "P(A)" in page


def test_lower5_page_says_grades_are_deferred(pages: Pages) -> None:
    page = pages.lower5.read_text(encoding="utf-8")
    assert "deferred: the batch has no anchors" in page
    assert 'id="grades-table"' not in page


def test_default_output_name(pages: Pages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = report(["html", "l5", "--db", str(pages.db)])
    assert result.exit_code == 0, result.output
    written = list(tmp_path.glob("report-*.html"))
    assert len(written) == 1 and written[0].read_text(encoding="utf-8").startswith("<!DOCTYPE")


def test_unknown_batch(pages: Pages, tmp_path: Path) -> None:
    result = report(["html", "nope", "--db", str(pages.db), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert "no batch" in result.stderr
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------- in a real browser


def chromium() -> str | None:
    """Headless Chromium: $CJ_TEST_CHROMIUM, else /usr/bin/chromium, else on PATH."""
    for candidate in (
        os.environ.get("CJ_TEST_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def chromium_args(binary: str, page: Path, profile: Path, action: str) -> list[str]:
    """Headless Chromium opening ``page`` with ``action`` (``--dump-dom`` or
    ``--screenshot=FILE``), logging the page's console to stderr."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,2000",
        action,
        page.resolve().as_uri(),
    ]


def run_chromium(binary: str, page: Path, workdir: Path, *actions: str) -> list[tuple[str, str]]:
    """Run one browser per action at the same time; (stdout, browser log) of each."""
    procs = [
        subprocess.Popen(
            chromium_args(binary, page, workdir / f"profile{i}", action),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, action in enumerate(actions)
    ]
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, stderr[-2000:]
        out.append((stdout, stderr))
    return out


def console_problems(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(p in line for p in CONSOLE_PROBLEMS)]


# looked up once at import: the autouse fixture of tests/conftest.py hides CJ_* variables
# from the tests themselves
CHROMIUM = chromium()
browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless chromium (set CJ_TEST_CHROMIUM or install chromium)"
)


@pytest.mark.browser
@browser
def test_page_in_headless_chromium(pages: Pages, tmp_path: Path) -> None:
    binary = CHROMIUM
    assert binary is not None
    shot = tmp_path / "page.png"
    (dom, dom_log), (_, shot_log) = run_chromium(
        binary, pages.regular, tmp_path, "--dump-dom", f"--screenshot={shot}"
    )
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom, section
    assert dom.count("<img") == 4
    assert console_problems(dom_log) == []
    assert console_problems(shot_log) == []
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert not_blank(pixels)


@pytest.mark.browser
@browser
def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The console check above can fail: a page with a script error and an image its
    Content-Security-Policy blocks (a local file: nothing goes to the network) is caught."""
    binary = CHROMIUM
    assert binary is not None
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
        '<img src="missing.png"><script>notDefined();</script>'
        "</body></html>",
        encoding="utf-8",
    )
    [(_, log)] = run_chromium(binary, broken, tmp_path, "--dump-dom")
    problems = console_problems(log)
    assert any("Uncaught" in p for p in problems)
    assert any("Content Security Policy" in p for p in problems)


# ---------------------------------------------------------------- nothing overflows

OVERFLOW_PROBE = """<script>
window.addEventListener("load", function () {
  var vw = document.documentElement.clientWidth, bad = [];
  document.querySelectorAll("body *").forEach(function (el) {
    for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") { return; }  // scrolls inside a box
    }
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 1 || r.left < -1)) {
      bad.push(el.tagName + (el.id ? "#" + el.id : "") + " " + Math.round(r.left) + ".."
               + Math.round(r.right));
    }
  });
  var out = document.createElement("pre");
  out.id = "overflow-probe";
  out.textContent = JSON.stringify({vw: vw, page: document.documentElement.scrollWidth,
                                    bad: bad});
  document.body.appendChild(out);
});
</script>"""


def overflow(binary: str, page: Path, tmp_path: Path, width: int) -> dict[str, object]:
    """Open ``page`` at ``width`` pixels with a probe listing elements outside the page."""
    probed = tmp_path / f"probe-{width}.html"
    probed.write_text(
        page.read_text(encoding="utf-8").replace("</body>", OVERFLOW_PROBE + "</body>"),
        encoding="utf-8",
    )
    args = chromium_args(binary, probed, tmp_path / f"profile-{width}", "--dump-dom")
    args = [a if not a.startswith("--window-size") else f"--window-size={width},1500" for a in args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="overflow-probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, "the probe did not run"
    import html as html_module
    import json

    result: dict[str, object] = json.loads(html_module.unescape(found.group(1)))
    return result


@pytest.mark.browser
@browser
@pytest.mark.parametrize("width", [1200, 640])
def test_no_element_overflows_the_page(pages: Pages, tmp_path: Path, width: int) -> None:
    binary = CHROMIUM
    assert binary is not None
    probe = overflow(binary, pages.regular, tmp_path, width)
    assert probe["bad"] == [], probe
    assert probe["page"] == probe["vw"]  # no horizontal scroll bar on the page itself


@pytest.mark.browser
@browser
def test_overflow_probe_catches_a_wide_element(tmp_path: Path) -> None:
    binary = CHROMIUM
    assert binary is not None
    wide = tmp_path / "wide.html"
    wide.write_text(
        '<!DOCTYPE html><html><body><div id="wide" style="width:3000px">x</div></body></html>',
        encoding="utf-8",
    )
    probe = overflow(binary, wide, tmp_path, 800)
    assert any(str(b).startswith("DIV#wide") for b in probe["bad"])  # type: ignore[attr-defined]


# ---------------------------------------------------------------- readable at any size


def test_positions_plot_aggregates_above_a_hundred_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    from cj_runner.services import html_charts

    nodes = [
        {"essay_id": f"e{i}", "a_count": 5, "b_count": 5 + (i % 3), "is_anchor": False}
        for i in range(600)
    ]
    fairness = {"nodes": nodes, "max_skew": 0.2}
    uri = html_charts.positions_plot(fairness)
    assert uri is not None
    assert not_blank(mpimg.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), "png"))
    seen: list[int] = []
    monkeypatch.setattr(
        html_charts, "_positions_histogram", lambda f: seen.append(len(f["nodes"])) or "x"
    )
    assert html_charts.positions_plot(fairness) == "x" and seen == [600]
    assert html_charts.positions_plot({"nodes": nodes[:100], "max_skew": 0.2}) != "x"


def test_table_cells_sort_numbers_and_escape_text() -> None:
    """Every kind of cell a report row holds: finite numbers are right-aligned and carry
    their exact value for sorting (NaN and infinities do not), floats show 3 decimals,
    text is escaped, ``None`` is a dash, lists are joined."""
    from cj_runner.services.html_sections import _table

    values = [
        1.23456, float("nan"), float("-inf"), 7, True, None, "<b>&'\"", [0.5, None, "x"],
        np.float64(2.5),
    ]  # fmt: skip
    page = _table("t", [("v", "value <v>", lambda r: r["v"])], [{"v": v} for v in values])
    cells = re.findall(r"<td[^>]*>.*?</td>", page)
    assert cells == [
        '<td data-v="1.23456" class="num">1.235</td>',
        "<td>nan</td>",
        "<td>-inf</td>",
        '<td data-v="7" class="num">7</td>',
        "<td>yes</td>",
        "<td>–</td>",
        "<td>&lt;b&gt;&amp;&#x27;&quot;</td>",
        "<td>0.500, –, x</td>",
        '<td data-v="2.5" class="num">2.500</td>',
    ]
    assert '<th scope="col">value &lt;v&gt;</th>' in page
    assert '<td colspan="1">no rows</td>' in _table("t", [("v", "v", lambda r: r)], [])


def test_ssr_below_the_axis_floor_is_drawn_on_it() -> None:
    from cj_runner.services.html_report import clip_to_floor, convergence_plot

    shown, clipped = clip_to_floor([(1, -6.771), (2, -0.145), (3, 0.9)], -1.0)
    assert shown == [(1, -1.0), (2, -0.145), (3, 0.9)] and clipped == [1]
    waves = [
        {"wave": 1, "max_score_change": None, "ssr": -6.771},
        {"wave": 2, "max_score_change": 5.8, "ssr": -0.145},
        {"wave": 3, "max_score_change": 0.3, "ssr": 0.92},
    ]
    assert convergence_plot({"waves": waves, "score_stability_threshold": 0.05}, 0.9)


def test_robust_reliability_stands_beside_ssr(pages: Pages) -> None:
    page = pages.regular.read_text(encoding="utf-8")
    assert page.count("robust reliability") >= 2  # summary and ranking
    assert "final design-robust reliability" in page

"""Panel benchmark (issue 17): judge misfit flags, position bias recovery and the effect of
excluding a flagged judge, over seeded simulated batches.

Each replicate draws true scores ``~ N(0, 1.64^2)`` for ``n`` essays and runs a batch to
``cpe`` comparisons per essay through the workflow's own pair selection
(:func:`cj_runner.services.panel_sim.simulate_panel`), each call going to the judge the
panel schedule gives it and a share of each wave's pairs (``--double-share``, default the
product's 0.1) also asked of a second judge, as a panel batch plans them. Panels:

* ``mock``: steady (noise 0.8), biased (noise 1.2, +5 pp position A), erratic (random);
* ``honest``: noise 0.8, 1.2 (+5 pp) and 1.0: nobody answers at random (false alarms);
* ``equal``: three judges that follow the model alike (false alarms under the model).

Printed per panel and pairing strategy: the share of runs in which each judge was flagged,
the coverage of its position-bias interval, the mean estimated and true bias, and the mean
true reliability (squared correlation with the truth) with every judge and without the
flagged ones; then Cohen's kappa of every two judges (mean over the runs) on the pairs both
judged, the kappa their true probabilities give on the same pairs
(:func:`cj_runner.services.panel_sim.true_kappa`), and how many pairs that was per run.

``--batches N`` also runs N real batches (``cj-run execute --judge mock_panel`` on
``examples/regular24`` to 20 comparisons per essay, seeds 1..N, a temporary database) and
counts how often ``cj-report judges`` flags each judge: the whole path, executor included.

Run: ``python benchmarks/bench_panels.py`` (about 3 minutes on one core) or ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cj_runner.judges.config import DEFAULT_PANEL_DOUBLE_SHARE
from cj_runner.services.panel_sim import MOCK_PANEL, PanelMember, panel_rates

PANELS: dict[str, tuple[PanelMember, ...]] = {
    "mock": MOCK_PANEL,
    "honest": (
        PanelMember("a", noise=0.8),
        PanelMember("b", noise=1.2, position_bias=0.05),
        PanelMember("c", noise=1.0),
    ),
    "equal": (PanelMember("a"), PanelMember("b"), PanelMember("c")),
}


ROOT = Path(__file__).resolve().parents[1]


def real_batches(count: int, double_share: float | None = None) -> None:
    """Run ``count`` mock-panel batches through the CLI and print the flag rates and the
    kappa of every two judges (``double_share``: ``PANEL_DOUBLE_SHARE``, default the
    panel's)."""
    bin_dir = Path(sys.executable).parent
    flagged: Counter[str] = Counter()
    covered = 0  # runs whose 95% interval of biased's position bias holds +5 pp
    kappas: dict[tuple[str, str], list[float]] = {}
    shared: dict[tuple[str, str], list[int]] = {}
    extra = [] if double_share is None else ["--set", f"PANEL_DOUBLE_SHARE={double_share}"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, count + 1):
            db = str(Path(tmp) / f"b{seed}.db")
            subprocess.run(
                [str(bin_dir / "cj-run"), "execute", "-i",
                 str(ROOT / "examples" / "regular24" / "manifest.csv"), "--judge",
                 "mock_panel", "--max-comparisons", "240", "--seed", str(seed),
                 "--batch-name", "b", "--db", db, "-q", *extra],
                check=True,
            )  # fmt: skip
            out = subprocess.run(
                [str(bin_dir / "cj-report"), "judges", "b", "--db", db, "-f", "json"],
                check=True,
                capture_output=True,
            ).stdout
            report = json.loads(out)
            for judge in report["judges"]:
                flagged[judge["judge"]] += bool(judge["flagged"])
                if judge["judge"] == "biased":
                    covered += judge["position_bias_low"] <= 0.05 <= judge["position_bias_high"]
            for row in report["kappa"]:
                pair = (row["judge_a"], row["judge_b"])
                shared.setdefault(pair, []).append(int(row["shared_edges"]))
                if row["kappa"] is not None:
                    kappas.setdefault(pair, []).append(float(row["kappa"]))
    rates = ", ".join(
        f"{name} {flagged[name] / count:.0%}" for name in ("steady", "biased", "erratic")
    )
    share = "the panel's" if double_share is None else f"{double_share:g}"
    print(
        f"real batches (regular24, 240 calls, seeds 1..{count}, PANEL_DOUBLE_SHARE "
        f"{share}): flagged {rates}; biased's +5 pp within its 95% interval in "
        f"{covered / count:.0%} ({time.perf_counter() - started:.0f} s)"
    )
    for pair, counts in shared.items():
        values = kappas.get(pair, [])
        mean = f"{sum(values) / len(values):+.2f}" if values else "-"
        print(
            f"  kappa {pair[0]}-{pair[1]}: mean {mean} over {len(values)} batches with a "
            f"kappa; shared pairs per batch {min(counts)}-{max(counts)} "
            f"(mean {sum(counts) / len(counts):.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--cpe", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="5 replicates (a smoke run)")
    parser.add_argument("--batches", type=int, default=0, help="real mock-panel batches")
    parser.add_argument("--only-batches", action="store_true", help="skip the simulation")
    parser.add_argument(
        "--double-share",
        type=float,
        default=None,
        help="PANEL_DOUBLE_SHARE of the simulation and the real batches (default 0.1)",
    )
    args = parser.parse_args()
    if args.batches:
        real_batches(args.batches, args.double_share)
    if args.only_batches:
        return
    replicates = 5 if args.quick else args.replicates
    double = DEFAULT_PANEL_DOUBLE_SHARE if args.double_share is None else args.double_share
    print(
        f"n={args.n} cpe={args.cpe:g} replicates={replicates} seed={args.seed} "
        f"PANEL_DOUBLE_SHARE={double:g}"
    )
    kappa_lines: list[str] = []
    print(
        "| panel | strategy | judge | flagged | bias 95% covers | bias est. | bias true "
        "| true rel. all | true rel. without flagged | raised |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, members in PANELS.items():
        for strategy in ("infogain", "random"):
            started = time.perf_counter()
            r = panel_rates(
                members,
                n=args.n,
                cpe=args.cpe,
                replicates=replicates,
                seed=args.seed,
                strategy=strategy,
                double_share=double,
            )
            for k, judge in enumerate(r.names):
                print(
                    f"| {name} | {strategy} | {judge} | {r.flag_rate[k]:.0%} "
                    f"| {r.bias_coverage[k]:.0%} | {r.mean_bias_shift[k]:+.3f} "
                    f"| {r.mean_true_shift[k]:+.3f} | {r.true_reliability_all:.3f} "
                    f"| {r.true_reliability_excluded:.3f} | {r.raised_share:.0%} |"
                )
            print(f"<!-- {name}/{strategy}: {time.perf_counter() - started:.0f} s -->")
            for (a, b), kappa, truth, shared in zip(
                r.kappa_pairs, r.mean_kappa, r.mean_true_kappa, r.mean_shared, strict=True
            ):
                kappa_lines.append(
                    f"| {name} | {strategy} | {a} | {b} | {shared:.1f} | {kappa:+.2f} "
                    f"| {truth:+.2f} |"
                )
    print()
    print(
        "| panel | strategy | judge | judge | shared pairs per run | mean kappa "
        "| kappa expected from the truth |"
    )
    print("|---|---|---|---|---|---|---|")
    for line in kappa_lines:
        print(line)


if __name__ == "__main__":
    main()

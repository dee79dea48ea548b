"""Benchmark: per-call latency over time through a region failure, as a PNG.

Run on demand (not in CI; ``tests/bench/run_all.py`` runs it for ``make bench``):

    .venv/bin/python tests/bench/failover_plot.py                      # 3 s, kill, 6 s, restart, 6 s
    .venv/bin/python tests/bench/failover_plot.py --pre-s 2 --fault-s 4 --post-s 4 --json out.json

The deployment and the fault are those of ``make chaos`` (``tests/chaos/run.py``,
scenario ``region-killed``): two regions with a blue and a green demo node each, two
gateways, Redis, and a load process (``tests/chaos/load.py``: four callers, clients of
both regions, every call a cache miss, one JSON line per call). After ``--pre-s`` of
steady load every eu-central node is SIGKILLed; ``--fault-s`` later they are restarted
(the step returns once they are ready again) and the load runs ``--post-s`` more.

Unlike the chaos runner this keeps every call: the PNG (``--png``) plots the latency
(answered - sent) of each call against the time it was sent, coloured by the region
that answered it (``X-Region``), with the kill, the restart and the moment the nodes
were ready marked; underneath, eu-central clients' answers per second by serving
region. ``--json FILE`` writes the counts and the latency of eu-central clients'
calls per phase (before the kill, during the fault, while restarting, after), each
phase's p50 against the p50 before the kill.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from admin_world import EU, US, two_region_world

HOME, OTHER = "eu-central", "us-east"
SCENARIO = "region-killed"
PNG = HERE / "failover-latency.png"
COLORS = {HOME: "#1f77b4", OTHER: "#ff7f0e"}


def _chaos_scenario() -> tuple[Any, Any]:
    """The chaos runner's region-killed scenario, so that the fault is exactly the one ``make chaos`` injects."""
    # loaded under a name of its own: "run" is too generic a module name to put on sys.path
    spec = importlib.util.spec_from_file_location("geogate_chaos_run", TESTS / "chaos" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    scenario = next(s for s in module.SCENARIOS if s.name == SCENARIO)
    return module, scenario


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float], list[str]]:
    """The calls the clients saw, the phase marks (monotonic seconds), and the runner's notes."""
    chaos, scenario = _chaos_scenario()
    with tempfile.TemporaryDirectory() as tmp, two_region_world(Path(tmp), attempt_timeout_ms=1000,
                                                                  watch_window_s=0) as world:
        run = chaos.drive(world, scenario, args.pre_s, args.fault_s, args.post_s)
    return run.calls, run.marks, run.result.notes


def summarize(calls: list[dict[str, Any]], marks: dict[str, float]) -> dict[str, Any]:
    home = [c for c in calls if c["client"] == EU]
    ok_home = [c for c in home if c["status"] == 200]
    moved = [c["done"] for c in ok_home if c["sent"] >= marks["fault"] and c["region"] != HOME]
    back = [c["done"] for c in ok_home if c["sent"] >= marks["heal"] and c["region"] == HOME]
    bounds = {"before": ("start", "fault"), "fault": ("fault", "heal"), "restarting": ("heal", "ready"),
              "after": ("ready", "stop")}
    phases: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in bounds.items():
        inside = [c for c in ok_home if marks[lo] <= c["sent"] < marks[hi]]
        ms = [(c["done"] - c["sent"]) * 1000 for c in inside]
        regions: dict[str, int] = {}
        for c in inside:
            regions[str(c["region"])] = regions.get(str(c["region"]), 0) + 1
        phases[name] = {"seconds": marks[hi] - marks[lo], "calls": len(inside), "p50_ms": percentile(ms, 50),
                        "p99_ms": percentile(ms, 99), "served_by": regions}
    base = phases["before"]["p50_ms"]
    for phase in phases.values():
        p50 = phase["p50_ms"]
        phase["p50_vs_before"] = p50 / base if p50 is not None and base else None
    return {
        "requests": len(calls),
        "failed": sum(1 for c in calls if c["status"] != 200),
        "eu_client_calls": len(home),
        "reroute_ms": (min(moved) - marks["fault"]) * 1000 if moved else None,
        "recover_ms": (min(back) - marks["heal"]) * 1000 if back else None,
        "restart_ready_s": marks["ready"] - marks["heal"],
        "phases": phases,
    }


def plot(calls: list[dict[str, Any]], marks: dict[str, float], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a benchmark machine
    import matplotlib.pyplot as plt

    t0 = marks["fault"]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5), height_ratios=[3, 1.2],
                                      constrained_layout=True)
    us_ok = [c for c in calls if c["client"] == US and c["status"] == 200]
    top.scatter([c["sent"] - t0 for c in us_ok], [(c["done"] - c["sent"]) * 1000 for c in us_ok],
                s=4, color="#bbbbbb", alpha=0.5, linewidths=0, label="us-east clients (served in us-east)")
    eu_ok = [c for c in calls if c["client"] == EU and c["status"] == 200]
    for region, color in COLORS.items():
        mine = [c for c in eu_ok if c["region"] == region]
        top.scatter([c["sent"] - t0 for c in mine], [(c["done"] - c["sent"]) * 1000 for c in mine],
                    s=6, color=color, alpha=0.7, linewidths=0, label=f"eu-central clients, served in {region}")
    failed = [c for c in calls if c["status"] != 200]
    if failed:
        top.scatter([c["sent"] - t0 for c in failed], [(c["done"] - c["sent"]) * 1000 for c in failed],
                    s=30, color="red", marker="x", label=f"failed calls ({len(failed)})")
    top.set_yscale("log")
    top.set_ylabel("latency per call (ms, log)")
    fig.suptitle(title, fontsize=11)
    top.grid(True, which="both", alpha=0.25)

    # answers per second for eu-central clients, by the region that served them
    width = 0.5
    end = max(float(c["sent"]) for c in calls) - t0
    start = marks["start"] - t0
    edges = [start + i * width for i in range(int((end - start) / width) + 2)]
    bottom_stack = [0.0] * (len(edges) - 1)
    for region, color in COLORS.items():
        counts = [0.0] * (len(edges) - 1)
        for c in eu_ok:
            if c["region"] == region:
                i = int((float(c["sent"]) - t0 - start) / width)
                if 0 <= i < len(counts):
                    counts[i] += 1 / width
        bottom.bar(edges[:-1], counts, width=width, align="edge", bottom=bottom_stack, color=color, alpha=0.8)
        bottom_stack = [a + b for a, b in zip(bottom_stack, counts)]
    bottom.set_ylabel("eu-central clients'\nanswers/s, by region")
    bottom.set_xlabel("seconds since every eu-central node was SIGKILLed (time each call was sent)")
    bottom.grid(True, axis="y", alpha=0.25)

    for ax in (top, bottom):
        ax.axvline(0, color="red", linestyle="--", linewidth=1.2)
        ax.axvline(marks["heal"] - t0, color="green", linestyle="--", linewidth=1.2)
        ax.axvline(marks["ready"] - t0, color="green", linestyle="-", linewidth=1.2)
    ymax = top.get_ylim()[1]
    for x, text in ((0, "kill"), (marks["heal"] - t0, "restart"), (marks["ready"] - t0, "nodes ready")):
        top.annotate(text, (x, ymax), xytext=(3, -12), textcoords="offset points", fontsize=9)
    # above the axes: inside, it would hide the calls it describes; the bars share its colours
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4, fontsize=8, markerscale=2, frameon=False)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pre-s", type=float, default=3.0, help="seconds of steady load before the kill")
    parser.add_argument("--fault-s", type=float, default=6.0, help="seconds from the kill to the restart")
    parser.add_argument("--post-s", type=float, default=6.0, help="seconds of load once the nodes are ready")
    parser.add_argument("--png", type=Path, default=PNG, help="where the plot goes")
    parser.add_argument("--no-png", action="store_true", help="measure only (no matplotlib needed)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    args = parser.parse_args()

    calls, marks, notes = run(args)
    summary = summarize(calls, marks)
    title = (f"Region failure under load: every eu-central node SIGKILLed, restarted {args.fault_s:g} s later "
             f"({summary['requests']:,} calls, {summary['failed']} failed)")
    if not args.no_png:
        plot(calls, marks, args.png, title)
        print(f"wrote {args.png}")
    print(f"{summary['requests']} calls, {summary['failed']} failed; reroute "
          f"{summary['reroute_ms'] or float('nan'):.0f} ms after the kill, eu-central serving again "
          f"{summary['recover_ms'] or float('nan'):.0f} ms after the restart ({'; '.join(notes)})")
    for name, p in summary["phases"].items():
        p50, p99 = p["p50_ms"], p["p99_ms"]
        print(f"  eu-central clients {name:10s}: {p['calls']:5d} ok calls in {p['seconds']:5.1f} s  "
              f"p50 {p50 if p50 is not None else float('nan'):7.1f} ms  "
              f"p99 {p99 if p99 is not None else float('nan'):7.1f} ms  served by {p['served_by']}")
    if args.json:
        doc = {"benchmark": "failover_plot", "scenario": SCENARIO,
               "settings": {"pre_s": args.pre_s, "fault_s": args.fault_s, "post_s": args.post_s},
               "png": None if args.no_png else str(args.png), "notes": notes, **summary}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

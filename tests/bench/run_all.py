"""``make bench``: every benchmark in one run, written up in ``tests/bench/BENCHMARKS.md``.

    .venv/bin/python tests/bench/run_all.py            # 4-5 minutes on a busy 2-core machine
    .venv/bin/python tests/bench/run_all.py --quick    # 2-3 minutes, shorter phases
    .venv/bin/python tests/bench/run_all.py --only store gateway

Runs, one after the other and each as a subprocess of its own with a time limit:

- ``node_batching.py``: dynamic batching against ``max_batch_size=1`` (demo model, CPU);
- ``gateway_overhead.py``: direct, nginx, geogate miss, geogate hit, then a SIGKILLed
  home node behind geogate and behind nginx (passive checks: ``max_fails`` + ``backup``);
- ``store_bench.py``: registry propagation through pub/sub, one MGET against 64 GETs;
- ``failover_plot.py``: per-call latency through a region failure, as
  ``tests/bench/failover-latency.png``;
- ``access_control.py``: API-key authentication plus the shared (Redis) rate limiter
  against the same gateway with access control off, on the miss and the hit path.

Each writes its figures as JSON (``--json``); this script turns them into one report
in which every result stands next to its baseline *measured in the same run*: on a
shared machine the absolute numbers drift from run to run, the ratios much less. A
benchmark whose prerequisite is missing (nginx, redis-server, torch) or that fails is
reported as such, and the others still run; without matplotlib the failover run still
measures, without its plot.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REPORT = HERE / "BENCHMARKS.md"
PNG = HERE / "failover-latency.png"
NGINX = "/usr/sbin/nginx"  # where gateway_overhead.py looks for it


@dataclass
class Bench:
    key: str
    script: str
    title: str
    full: list[str]
    quick: list[str]
    limit_s: float  # a bound for a hung run: a few times what it takes on a busy 2-core machine
    needs: list[Callable[[], str | None]] = field(default_factory=list)  # each: why it cannot run, or None


def _module(name: str, why: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(name) else f"Python package `{name}` is not installed ({why})"


def _program(path: str) -> Callable[[], str | None]:
    found = Path(path).exists() if os.sep in path else shutil.which(path)
    return lambda: None if found else f"`{path}` is not installed"


BENCHES = [
    Bench("batching", "node_batching.py", "Node: dynamic batching vs unbatched",
          # 32 clients in one process are enough to fill batches of the CPU demo model; rounds A B A B ...
          # so that drift on a shared machine hits both variants alike
          ["--clients", "32", "--seconds", "8", "--rounds", "3"],
          ["--clients", "32", "--seconds", "4", "--rounds", "1"], 300,
          [_module("torch", "the node extra")]),
    Bench("gateway", "gateway_overhead.py", "Gateway overhead: direct vs nginx vs geogate",
          ["--seconds", "5", "--failover-seconds", "4"],
          ["--seconds", "2", "--warmup", "0.5", "--failover-seconds", "3"], 300,
          [_program(NGINX), _program("redis-server")]),
    Bench("store", "store_bench.py", "Registry propagation and cache lookups (Redis)",
          ["--changes", "200", "--rounds", "500"],
          ["--changes", "50", "--rounds", "100"], 180,
          [_program("redis-server")]),
    Bench("failover", "failover_plot.py", "Latency through a region failure",
          ["--pre-s", "3", "--fault-s", "6", "--post-s", "6", "--png", str(PNG)],
          ["--pre-s", "2", "--fault-s", "4", "--post-s", "4", "--png", str(PNG)], 420,
          [_program("redis-server"), _module("torch", "the node extra")]),
    Bench("access", "access_control.py", "Client access: authentication + shared limiter vs off",
          # rounds off on, on off, ... so that drift on a shared machine hits both variants alike
          ["--seconds", "3", "--rounds", "8"],
          ["--seconds", "2", "--warmup", "0.5", "--rounds", "1"], 300,
          [_program("redis-server")]),
]


@dataclass
class Outcome:
    bench: Bench
    args: list[str]
    data: dict[str, Any] | None = None
    skipped: str | None = None  # why it did not run, or why it produced nothing
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)


def run_bench(bench: Bench, args: list[str], out_dir: Path) -> Outcome:
    outcome = Outcome(bench, args)
    for need in bench.needs:
        if (why := need()) is not None:
            outcome.skipped = f"not run: {why}"
            print(f"== {bench.script}: {outcome.skipped}", flush=True)
            return outcome
    json_path = out_dir / f"{bench.key}.json"
    cmd = [sys.executable, str(HERE / bench.script), *args, "--json", str(json_path)]
    print(f"== {bench.script} {' '.join(args)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=15)
    started = time.monotonic()
    # a session of its own, so that a run past its limit can be stopped with whatever it started
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)

    def echo() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print("   ", line, end="", flush=True)
            tail.append(line.rstrip())

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        proc.wait(bench.limit_s)
    except subprocess.TimeoutExpired:
        outcome.skipped = f"stopped after its limit of {bench.limit_s:.0f} s"
        # SIGINT first: the script's finally blocks stop its nodes, gateways and nginx
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    outcome.seconds = time.monotonic() - started
    outcome.tail = list(tail)
    if outcome.skipped is None and proc.returncode != 0:
        outcome.skipped = f"failed: exit status {proc.returncode}"
    if outcome.skipped is None:
        try:
            outcome.data = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            outcome.skipped = f"failed: no readable JSON ({exc})"
    print(f"== {bench.script}: {outcome.skipped or 'done'} in {outcome.seconds:.0f} s", flush=True)
    return outcome


# -- the report ---------------------------------------------------------------------------

def _num(x: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.{digits}f}{unit}"


def _ratio(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"**{x:.{digits}f}x**"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:  # no git (an unpacked source tree): the report says "?"
        return ""


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": str(os.cpu_count()), "commit": commit + (" (with uncommitted changes)" if dirty else ""),
            "system": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
            "memory": f"{mem} GiB", "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def section_batching(d: dict[str, Any]) -> list[str]:
    s = d["settings"]
    rounds: dict[str, list[dict[str, Any]]] = {}
    for r in d["rounds"]:
        rounds.setdefault(r["variant"], []).append(r)
    mean = d["pairs_per_s"]
    lines = [
        (f"The demo similarity model on the CPU ({s['device']}, {s['dtype']}), one node at a time, "
        f"{s['clients']} concurrent clients in a separate load process, {s['pairs_per_request']} pair per request, "
        f"{s['seconds']:g} s per run, {s['rounds']} round(s) alternated (batched, unbatched, batched, ...). "
        f"Baseline: the same node with `--max-batch-size 1`."), "",
        "| variant | pairs/s per round | mean pairs/s | worst p99 | vs unbatched |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, label in (("batched", f"batched (max_batch_size={s['max_batch_size']})"),
                        ("unbatched", "unbatched (max_batch_size=1), baseline")):
        rs = rounds.get(name, [])
        per = ", ".join(_num(r["pairs_per_s"]) for r in rs)
        errors = sum(int(r["errors"]) for r in rs)
        p99 = max((r["p99_ms"] for r in rs), default=None)
        vs = _ratio(d["ratio"]) if name == "batched" else "1.00x"
        lines.append(f"| {label} | {per} | {_num(mean.get(name))} | {_num(p99, 0, ' ms')} | {vs} |"
                     + (f" ({errors} errors)" if errors else ""))
    return lines


def section_gateway(d: dict[str, Any]) -> tuple[list[str], list[str]]:
    s, p = d["settings"], d["paths"]
    direct, nginx, miss, hit = p["direct"], p["nginx"], p["geogate miss"], p["geogate hit"]
    lines = [
        (f"One node ({'a fake node answering at once: the proxies are what is measured' if s['node'] == 'fake' else 'the demo model'}), "
        f"four paths one after the other, each {s['warmup']:g} s warm-up then {s['seconds']:g} s measured with "
        f"{s['connections']} connections from a separate load process; one gateway process, one nginx worker. "
        "nginx: upstream keepalive, HTTP/1.1, no cache. geogate miss: `cache_ttl_s: 0`, every call goes to the node; "
        "geogate hit: the same request every time, answered from the Redis cache. Baseline: nginx in front of the "
        "same node; direct is the floor."), "",
        "| path | req/s | p50 | p99 | p50 added over direct | req/s vs nginx | req/s vs direct | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in p.items():
        added = None if r is direct else r["p50"] - direct["p50"]
        vs_nginx = "1.00x (baseline)" if r is nginx else _ratio(_div(r["rps"], nginx["rps"]))
        lines.append(f"| {name} | {_num(r['rps'], 0)} | {_num(r['p50'], 2, ' ms')} | {_num(r['p99'], 2, ' ms')} | "
                     f"{_num(added, 2, ' ms')} | {vs_nginx} | {_num(_div(r['rps'], direct['rps']), 2, 'x')} | "
                     f"{r['errors']} |")
    hit_miss = _div(hit["rps"], miss["rps"])
    nginx_direct = _div(nginx["rps"], direct["rps"])
    if nginx_direct is not None and nginx_direct > 0.85:
        # with a node that answers at once, one Python load process is the slowest part of these two paths
        lines += ["", (f"nginx and direct are {nginx_direct:.2f}x apart: both run near what one Python load process "
                       "can send on these cores, so their difference is noise, and nginx is the baseline rather "
                       "than direct.")]
    lines += ["", (f"geogate hit / geogate miss throughput: {_ratio(hit_miss)}; "
                  f"p50 {_num(hit['p50'], 2, ' ms')} against {_num(miss['p50'], 2, ' ms')}.")]
    headline = [
        f"| geogate miss throughput | nginx | {_ratio(_div(miss['rps'], nginx['rps']))} |",
        f"| geogate hit throughput | nginx | {_ratio(_div(hit['rps'], nginx['rps']))} |",
        f"| geogate hit throughput | geogate miss | {_ratio(hit_miss)} |",
        f"| nginx throughput | direct | {_ratio(_div(nginx['rps'], direct['rps']))} |",
    ]
    return lines, headline


def section_node_failover(d: dict[str, Any]) -> tuple[list[str], list[str]]:
    s, f = d["settings"], d["failover"]
    if not f:
        return ["Not run (`--no-failover`)."], []
    lines = [
        (f"Two regions, one node each (same kind as above), {s['connections']} connections of steady load for "
        f"{s['failover_seconds']:g} s; {s['kill_after']:g} s in, the home node is SIGKILLed. geogate: region "
        "cn-east fails over to eu-central (active health probes every 0.2 s, retry on another node). nginx "
        "(baseline): the home node as the server, the other as `backup`, passive checks only (`max_fails=1 "
        "fail_timeout=10s`, `proxy_next_upstream error timeout http_502 http_503 http_504`)."), "",
        "| proxy | calls | failed | failed per 10,000 calls | kill -> last failure | kill -> first answer from the other node |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in f.items():
        rate = _div(r["failed"] * 10_000, r["calls"])
        label = name + (" (baseline)" if name == "nginx" else "")
        statuses = f" ({', '.join(r['statuses'])})" if r.get("statuses") else ""
        lines.append(f"| {label} | {r['calls']:,} | {r['failed']}{statuses} | {_num(rate, 1)} | "
                     f"{_num(r['last_failed_ms'], 1, ' ms')} | {_num(r['first_moved_ms'], 1, ' ms')} |")
    headline = []
    if "geogate" in f and "nginx" in f:
        g, n = f["geogate"], f["nginx"]
        # a rate, not a count: nginx passes more calls in the same seconds, so it has more calls to fail
        rate_ratio = _div(_div(g["failed"], g["calls"]), _div(n["failed"], n["calls"]))
        ratio = _ratio(rate_ratio) if n["failed"] else "- (nginx failed none)"
        text = f"{g['failed']} vs {n['failed']} failed calls; failure rate {ratio}"
        lines += ["", f"Failed calls, geogate against nginx: {text}."]
        headline.append(f"| failed calls, home node SIGKILLed: geogate | nginx, passive checks + backup | {text} |")
    return lines, headline


def section_store(d: dict[str, Any]) -> tuple[list[str], list[str]]:
    s, prop, look = d["settings"], d["propagation"], d["lookups"]
    target = d["target_p99_ms"]
    lines = [
        (f"One private redis-server. Propagation: {prop['changes']} registry changes (`set_canary`), each seen by "
        f"{s['watchers']} watcher processes (`RegistryWatcher` on pub/sub; they poll only every 60 s), "
        f"{prop['samples']} samples of write -> callback; {prop['missed']} changes not seen by every watcher within "
        f"{s['change_timeout']:g} s. Baseline: the `set_canary` call alone (the write itself, measured on the "
        f"same changes). Lookups: {s['rounds']} rounds of one MGET of {s['keys']} keys against the same "
        f"{s['keys']} keys as sequential GETs (alternated)."), "",
        "| measure | p50 | p99 | max | vs baseline (p50 / p99) |",
        "| --- | --- | --- | --- | --- |",
        (f"| write -> every watcher's callback | {_num(prop['p50'], 2, ' ms')} | {_num(prop['p99'], 2, ' ms')} | "
        f"{_num(prop['max'], 2, ' ms')} | {_ratio(_div(prop['p50'], prop['write_p50']))} / "
        f"{_ratio(_div(prop['p99'], prop['write_p99']))} |"),
        (f"| `set_canary` call alone (baseline) | {_num(prop['write_p50'], 2, ' ms')} | "
        f"{_num(prop['write_p99'], 2, ' ms')} | | 1.00x |"),
        "", (f"Target p99 < {target:g} ms: {'met' if d['target_met'] else '**not met**'} "
            f"(p99 is {_num(_div(prop['p99'], target), 2, 'x')} the target)."), "",
        "| lookup of {} keys | mean | p50 | vs one MGET |".format(s["keys"]),
        "| --- | --- | --- | --- |",
        f"| one MGET (baseline) | {_num(look['mget_us'], 1, ' µs')} | {_num(look['mget_p50_us'], 1, ' µs')} | 1.00x |",
        (f"| {s['keys']} sequential GETs | {_num(look['get_us'], 1, ' µs')} | {_num(look['get_p50_us'], 1, ' µs')} | "
        f"{_ratio(look['ratio'], 1)} |"),
    ]
    headline = [
        (f"| registry propagation p50 / p99 | the write alone | {_ratio(_div(prop['p50'], prop['write_p50']))} / "
        f"{_ratio(_div(prop['p99'], prop['write_p99']))} ({_num(prop['p50'], 2, ' ms')} / "
        f"{_num(prop['p99'], 2, ' ms')}; target p99 < {target:g} ms) |"),
        f"| {s['keys']} sequential GETs (time) | one MGET | {_ratio(look['ratio'], 1)} |",
    ]
    return lines, headline


def section_failover(d: dict[str, Any], png: Path) -> tuple[list[str], list[str]]:
    s, ph = d["settings"], d["phases"]
    lines = [
        (f"The `make chaos` deployment (two regions, a blue and a green demo node each, `--cpu-threads 1`, two "
        f"gateways, Redis) and its `{d['scenario']}` fault: after {s['pre_s']:g} s of steady load (4 callers, "
        "clients of both regions, every call a cache miss) every eu-central node is SIGKILLed, "
        f"{s['fault_s']:g} s later restarted, then {s['post_s']:g} s more once they are ready. "
        f"{d['requests']:,} calls, **{d['failed']} failed**; eu-central clients rerouted to us-east "
        f"{_num(d['reroute_ms'], 0, ' ms')} after the kill; served in eu-central again "
        f"{_num(d['recover_ms'], 0, ' ms')} after the restart began (the nodes were ready after "
        f"{d['restart_ready_s']:.1f} s: loading the model is most of it). Baseline for each phase: eu-central "
        "clients' latency before the kill."), "",
        "| phase (eu-central clients' calls sent in it) | length | ok calls | served by | p50 | p99 | p50 vs before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"before": "before the kill (baseline)", "fault": "region down", "restarting": "nodes restarting",
             "after": "nodes ready again"}
    for key, label in names.items():
        p = ph[key]
        served = ", ".join(f"{region} {n}" for region, n in sorted(p["served_by"].items()))
        lines.append(f"| {label} | {p['seconds']:.1f} s | {p['calls']:,} | {served or '-'} | "
                     f"{_num(p['p50_ms'], 1, ' ms')} | {_num(p['p99_ms'], 1, ' ms')} | "
                     f"{'1.00x' if key == 'before' else _ratio(p['p50_vs_before'])} |")
    lines += ["", ("While the nodes restart, the model loads in eu-central compete for the same two cores as us-east's "
                  "nodes and the gateways: latency then says as much about this machine as about the gateway."), ""]
    if d.get("png") and png.exists():
        lines.append(f"![Per-call latency through a region failure: kill, restart, nodes ready]({png.name})")
    else:
        lines.append("(No plot: matplotlib is not installed; `pip install matplotlib` and run again.)")
    headline = [
        f"| calls failed through a region failure | - | {d['failed']} of {d['requests']:,} |",
        (f"| eu-central clients' p50 with the region down | the same clients before the kill | "
        f"{_ratio(ph['fault']['p50_vs_before'])} |"),
    ]
    return lines, headline


def section_access(d: dict[str, Any]) -> tuple[list[str], list[str]]:
    s, p, target = d["settings"], d["paths"], d["target"]
    lines = [
        (f"One gateway process per variant in front of a fake node (it answers at once: the gateway is what is "
         f"measured) and one private redis-server; {s['rounds']} round(s) of off and on alternated (off on, on off, "
         f"...), each {s['warmup']:g} s warm-up then {s['seconds']:g} s measured with {s['connections']} connections "
         "from a separate load process; req/s and latencies are medians over the rounds, the ratio is the median of "
         "the rounds' ratios (each round's off and on ran back to back). On: an API key (`Authorization: Bearer`, from a "
         "clients file) and the shared limiter with every bucket set (request rate, item rate, daily quota: token "
         "buckets in Redis taken in leases), the limits high enough that nothing is refused. Baseline: the same "
         "gateway with access control off (`allow_anonymous: true`, no limits: the limiter is never asked). Miss: "
         "`cache_ttl_s: 0`; hit: the same request every time, answered from the cache. Gateway CPU per call comes "
         "from `/proc` (warm-up included); its off/on is what a CPU-bound gateway with a core of its own would keep, "
         "while the throughput ratio also carries the load process and the node, which share the cores."), "",
        ("| path | req/s off (baseline) | req/s on | on vs off (per round) | p50 off / on | p99 off / on | "
         "gateway CPU per call off / on (off/on) | Lua takes per 1,000 calls | target |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    headline = []
    for name, r in p.items():
        off, on = r["off"], r["on"]
        per = ", ".join(_num(x, 2) for x in r["round_ratios"])
        met = "met" if r["met"] else "**not met**"
        cpu_off, cpu_on = off["cpu_us_per_call"]["gateway"], on["cpu_us_per_call"]["gateway"]
        lines.append(f"| {name} | {_num(off['rps'], 0)} | {_num(on['rps'], 0)} | {_ratio(r['ratio'])} ({per}) | "
                     f"{_num(off['p50'], 2)} / {_num(on['p50'], 2, ' ms')} | "
                     f"{_num(off['p99'], 2)} / {_num(on['p99'], 2, ' ms')} | "
                     f"{_num(cpu_off, 0)} / {_num(cpu_on, 0, ' µs')} ({_ratio(r['gateway_cpu_ratio'])}) | "
                     f"{_num(on['lua_takes_per_1000_calls'], 1)} | >= {target:.2f}: {met} |")
        headline.append(f"| geogate {name} throughput, access control on | the same, access control off | "
                        f"{_ratio(r['ratio'])} (target >= {target:.2f}: {met}) |")
    held = sum(1 for c in d["checks"] if c["held"])
    lines += ["", (f"Checks that the run measured what it says, {held} of {len(d['checks'])} held: the on gateway "
                   "refused a call without the key and one with a wrong key (401), counted the calls as client "
                   "`bench`, answered no 429 and kept its buckets in Redis, never its local fallback; the off "
                   "gateway served the calls as `anonymous` and never asked the limiter.")]
    return lines, headline


def write_report(outcomes: list[Outcome], quick: bool, total_s: float, info: dict[str, str], path: Path) -> None:
    by_key = {o.bench.key: o for o in outcomes}
    cmd = "tests/bench/run_all.py" + (" --quick" if quick else "")
    lines = [
        "# Benchmarks", "",
        (f"Produced by `make bench` (`{cmd}`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {info['commit']}, "
         f"on {info['system']}, {info['cores']} cores ({info['cpu']}), {info['memory']} of memory, Python "
         f"{info['python']}; load average when it started: {info['load']}. The whole run took {total_s:.0f} s."), "",
        (f"**On noise.** This is a shared {info['cores']}-core machine: other work may run beside the benchmarks "
         "(see the load average above), and the load generators, the servers under test and Redis all share the "
         "same cores. Absolute numbers (req/s, ms) move by tens of percent from one run to the next and say little "
         "about production hardware. What to compare is each ratio, taken between a result and its baseline "
         "measured minutes apart in the same run; even those move from run to run, by 10-20 % on a quiet machine "
         "and by more when the load average is above the number of cores. Runs are short (seconds), so p99s rest "
         "on few calls.")
        + (" This was a `--quick` run: shorter phases and one batching round, so noisier ratios still." if quick
           else ""), "",
    ]
    sections: list[tuple[str, list[str] | None]] = []
    headline: list[str] = []

    def missing(key: str) -> list[str] | None:
        o = by_key.get(key)
        if o is None:
            return ["Not run (left out with `--only`)."]
        if o.data is None:
            text = [f"**Skipped** ({o.bench.script}): {o.skipped}."]
            if o.tail:
                text += ["", "```", *o.tail[-8:], "```"]
            return text
        return None

    def settings_line(key: str) -> list[str]:
        o = by_key[key]
        shown = [os.path.relpath(a, REPO) if a.startswith("/") else a for a in o.args]
        return ["", f"<sub>Run as `{o.bench.script} {' '.join(shown)}`, {o.seconds:.0f} s.</sub>"]

    def add(key: str, title: str, render: Callable[[dict[str, Any]], tuple[list[str], list[str]]]) -> None:
        """A section from one benchmark's data (its body and its summary rows), or why it was skipped."""
        body = missing(key)
        if body is None:
            data = by_key[key].data
            assert data is not None
            body, rows = render(data)
            body += settings_line(key)
            headline.extend(rows)
        sections.append((title, body))

    add("batching", "1. Node: dynamic batching vs unbatched", lambda d: (
        section_batching(d), [f"| node, batched pairs/s | the same node unbatched | {_ratio(d['ratio'])} |"]))

    gw_body = missing("gateway")
    fo_body = gw_body
    if gw_body is None:
        d = by_key["gateway"].data
        assert d is not None
        gw_body, h = section_gateway(d)
        gw_body += settings_line("gateway")
        headline += h
        fo_body, h = section_node_failover(d)
        fo_body += ["", "<sub>Measured by the same `gateway_overhead.py` run.</sub>"]
        headline += h
    sections.append(("2. Gateway overhead: geogate vs nginx vs direct", gw_body))
    sections.append(("3. Failover: home node SIGKILLed, geogate vs nginx passive checks", fo_body))

    add("store", "4. Registry propagation and cache lookups", section_store)
    add("failover", "5. Latency through a region failure", lambda d: section_failover(d, PNG))
    add("access", "6. Client access control: authentication + shared limiter vs off", section_access)

    lines += ["## Summary", "", "Each ratio is against a baseline measured in the same run; details below.", "",
              "| result | baseline | ratio |", "| --- | --- | --- |", *headline]
    skipped = [o for o in outcomes if o.data is None]
    for o in skipped:
        lines.append(f"| {o.bench.title} | | skipped: {o.skipped} |")
    lines.append("")
    for title, body in sections:
        lines += [f"## {title}", "", *(body or []), ""]
    lines += ["## Reproduce", "",
              ("`make bench` (4-5 minutes here), or `.venv/bin/python tests/bench/run_all.py --quick` (2-3). "
              "Each script also runs alone with its own options (`--help`); the plot needs matplotlib "
              "(`pip install matplotlib`)."), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases (2-3 minutes)")
    parser.add_argument("--only", nargs="+", choices=[b.key for b in BENCHES], help="run these benchmarks only")
    parser.add_argument("--out", type=Path, default=REPORT, help="the report")
    parser.add_argument("--keep-json", type=Path, metavar="DIR", help="also keep each benchmark's JSON in DIR")
    args = parser.parse_args()
    info = machine()
    started = time.monotonic()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        for bench in BENCHES:
            if args.only and bench.key not in args.only:
                continue
            bench_args = bench.quick if args.quick else bench.full
            if bench.key == "failover" and not importlib.util.find_spec("matplotlib"):
                # the numbers still stand without the picture; the report says the plot is missing
                print("matplotlib is not installed: the failover run makes no plot (pip install matplotlib)")
                bench_args = [*bench_args[:bench_args.index("--png")], "--no-png"]
            outcomes.append(run_bench(bench, bench_args, out_dir))
        if args.keep_json:
            args.keep_json.mkdir(parents=True, exist_ok=True)
            for f in out_dir.glob("*.json"):
                shutil.copy(f, args.keep_json / f.name)
    total = time.monotonic() - started
    write_report(outcomes, args.quick, total, info, args.out)
    print(f"wrote {args.out} ({total:.0f} s)")
    for o in outcomes:
        if o.data is None:
            print(f"  {o.bench.script}: {o.skipped}")
    return 0 if all(o.data is not None or o.skipped.startswith("not run") for o in outcomes) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())

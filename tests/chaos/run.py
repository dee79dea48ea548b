"""``make chaos``: fault scenarios on a local two-region deployment under steady load.

    .venv/bin/python tests/chaos/run.py [--only NAME ...] [--pre-s 3 --fault-s 6 --post-s 6]

The deployment (``tests/admin_world.py``): Redis, eu-central and us-east each with a
blue (active) and a green node, two gateways. Load comes from a process of its own
(``load.py``): four callers, clients of both regions, every call a cache miss, spread
over both gateways with a retry on the other gateway only when one cannot be reached.
Each scenario lets the load run, injects its fault into eu-central (or a gateway, or
Redis), heals it, and counts from the calls the clients saw: requests, failures,
answers with a version other than the active one, time from the fault to the first
answer for an eu-central client from another region (reroute), and time from the heal
to the first answer from eu-central again (recover). Results go to
``tests/chaos/RELIABILITY.md`` with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
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
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import aiohttp
from admin_world import EU, US, World, auth, two_region_world

HOME = "eu-central"
REPORT = HERE / "RELIABILITY.md"


@dataclass
class Result:
    name: str
    description: str
    requests: int = 0
    failed: int = 0
    wrong_version: int = 0
    reroute_ms: float | None = None
    recover_ms: float | None = None
    fault_p99_ms: float | None = None  # eu-central clients' calls sent during the fault
    notes: list[str] = field(default_factory=list)
    # (monotonic time, the versions a call sent from then on may be answered with); before
    # the first entry: the active (blue) version. A switch in flight allows both colors'.
    versions: list[tuple[float, frozenset[str]]] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    inject: Callable[[World, Result], None]
    heal: Callable[[World, Result], None]
    gateways: Callable[[World], list[str]] = lambda w: [w.a.url, w.b.url]  # where the load goes


def _node(world: World, color: str = "blue") -> object:
    return world.nodes[f"{HOME}-{color}"]


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def _http(method: str, url: str, body: dict[str, object] | None = None, headers: dict[str, str] | None = None,
          timeout: float = 10) -> tuple[int, Any]:
    """One call from this (synchronous) runner: status and decoded JSON body."""
    async def call() -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, s.request(
                method, url, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    return asyncio.run(call())


def _ready(url: str, path: str) -> bool:
    try:
        return _http("GET", url + path, timeout=1)[0] == 200
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


def _admin(world: World, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    return _http("POST", world.b.url + path, body, auth("operator"), timeout=30)


def _admin_write(world: World) -> int:
    return _admin(world, "/admin/v1/canary", {"percent": 0, "reason": "chaos: is the store writable"})[0]


def _readyz(url: str) -> dict[str, object]:
    return _http("GET", url + "/readyz", timeout=5)[1]  # type: ignore[no-any-return]


def _kill(nodes: list[object]) -> None:
    for node in nodes:
        node.proc.kill()  # type: ignore[attr-defined]
        node.proc.wait(10)  # type: ignore[attr-defined]


def _restart(nodes: list[object], result: Result) -> None:
    for node in nodes:
        node.start()  # type: ignore[attr-defined]
    seconds = max(_wait(lambda n=n: _ready(n.url, "/health/ready"), 180, "a restarted node")  # type: ignore[attr-defined]
                  for n in nodes)
    result.notes.append(f"restarted node(s) ready after {seconds:.1f} s")


WRONG_VERSION = "mgeo_demo_tiny-wrong-20260101"


def _relaunch(node: object, result: Result, *extra: str) -> None:
    """Restart ``node`` with its own arguments plus ``extra`` (later flags win)."""
    _kill([node])
    base = getattr(node, "base_cmd", None) or list(node.cmd)  # type: ignore[attr-defined]
    node.base_cmd = base  # type: ignore[attr-defined]
    node.cmd = [*base, *extra]  # type: ignore[attr-defined]
    _restart([node], result)


def _redis_down(world: World, result: Result) -> None:
    world.redis.kill()
    status = _admin_write(world)
    result.notes.append(f"admin write while Redis is down: {status}")
    if status != 503:
        result.failed += 1_000_000  # makes the row fail loudly: writes must be refused, not lost


def _redis_up(world: World, result: Result) -> None:
    world.redis.restart()  # empty, as after a crash without persistence
    seconds = _wait(lambda: _admin_write(world) == 200, 60, "admin writes to work again")
    result.notes.append(f"admin writes accepted {seconds:.1f} s after the restart (the registry healed from the "
                        "gateways' snapshots)")


def _both(world: World) -> frozenset[str]:
    return frozenset(world.versions[color][0] for color in ("blue", "green"))


def _switch_and_kill_redis(world: World, result: Result) -> None:
    """Switch to green and SIGKILL Redis the moment the switch's write is published (this
    process listens on the change channel like the gateways do), so that it dies while the
    switching gateway waits for every gateway to acknowledge the new epoch."""
    import redis

    changes = redis.Redis.from_url(world.redis.url).pubsub()
    changes.subscribe("geogate:registry:changes")
    changes.get_message(timeout=5)  # the subscription's confirmation
    answer: dict[str, object] = {}

    def switch() -> None:
        answer["status"], answer["body"] = _admin(world, "/admin/v1/switch",
                                                  {"to": "green", "reason": "chaos: Redis dies mid-switch"})
        answer["at"] = time.monotonic()

    result.versions.append((time.monotonic(), _both(world)))
    thread = threading.Thread(target=switch)
    thread.start()
    published = changes.get_message(timeout=30)  # the pre-checks run first (golden set on green)
    world.redis.kill()
    changes.close()
    thread.join(60)
    result.notes.append("Redis killed " + ("as the new epoch was published" if published else
                                           "after 30 s without the switch's write"))
    status, body = answer.get("status"), answer.get("body") or {}
    unconfirmed = body.get("gateways_not_confirmed") if isinstance(body, dict) else None
    result.notes.append(f"the switch answered {status}" + (f", not confirmed by: {'; '.join(unconfirmed)}"
                                                         if unconfirmed else " (every gateway confirmed)"))
    if status == 200 and not unconfirmed:  # acknowledged: from then on, no call gets the old version
        result.versions.append((float(answer["at"]), frozenset({world.versions["green"][0]})))  # type: ignore[arg-type]


def _redis_back_and_converged(world: World, result: Result) -> None:
    """Redis restarted empty; the gateways must agree on one color again without an
    operator. Then switch back to blue (acknowledged) for the scenarios after this one."""
    world.redis.restart()

    def agreed() -> bool:
        states = [_readyz(url) for url in (world.a.url, world.b.url)]
        return _admin_write(world) == 200 and len({(s["epoch"], s["active_color"]) for s in states}) == 1

    seconds = _wait(agreed, 60, "the gateways to agree on one registry record")
    state = _readyz(world.a.url)
    result.notes.append(f"both gateways at epoch {state['epoch']}, {state['active_color']} active, {seconds:.1f} s "
                        "after the restart")
    if state["active_color"] != "blue":
        result.versions.append((time.monotonic(), _both(world)))
        status, body = _admin(world, "/admin/v1/rollback", {"reason": "chaos: back to blue"})
        if status != 200 or body.get("gateways_not_confirmed"):
            result.failed += 1_000_000  # the deployment did not converge: fail the row loudly
        result.versions.append((time.monotonic(), frozenset({world.versions["blue"][0]})))
        result.notes.append(f"rolled back to blue: {status}" + ("" if status == 200 else f" {body}"))


def _status_epoch(world: World) -> int:
    return int(_http("GET", world.b.url + "/admin/v1/status", headers=auth("viewer"))[1]["registry"]["epoch"])


def _primary_down(world: World, result: Result) -> None:
    before = _status_epoch(world)
    world.redis.kill()
    seconds = _wait(lambda: _admin_write(world) == 200, 60, "writes through the promoted replica")
    after = _status_epoch(world)
    result.notes.append(f"Sentinel promoted the replica: admin writes accepted again {seconds:.1f} s after the kill; "
                        f"registry epoch {before} before, {after} after one write (state kept)")
    if after != before + 1:
        result.failed += 1_000_000  # the registry lost or skipped state


def _primary_back(world: World, result: Result) -> None:
    world.redis.start()  # Sentinel turns the old primary into a replica of the new one


def _gateway_restart(world: World, result: Result) -> None:
    world.a.start()
    seconds = _wait(lambda: _ready(world.a.url, "/readyz"), 60, "the restarted gateway")
    result.notes.append(f"gateway ready again after {seconds:.1f} s")


_hedging: dict[str, object] = {}  # one extra gateway that hedges, started on first use


def _hedging_gateway(world: World) -> list[str]:
    """A third gateway in eu-central that sends a twin attempt after 100 ms."""
    from helpers import GatewayProcess

    gw = _hedging.get(world.tmp.name)
    if gw is None:
        gw = _hedging[world.tmp.name] = GatewayProcess(world.tmp, "--config", str(world.config), "--region", HOME,
                                                       "--hedge-after-ms", "100", "--hedge-budget-percent", "100")
        _wait(lambda: _ready(gw.url, "/readyz"), 60, "the hedging gateway")  # type: ignore[attr-defined]
    return [gw.url]  # type: ignore[attr-defined]


SCENARIOS = [
    Scenario("node-killed", "the eu-central blue node SIGKILLed mid-batch, later restarted",
             lambda w, r: _kill([_node(w)]), lambda w, r: _restart([_node(w)], r)),
    Scenario("region-killed", "every eu-central node (blue and green) SIGKILLed, later restarted",
             lambda w, r: _kill([_node(w), _node(w, "green")]),
             lambda w, r: _restart([_node(w), _node(w, "green")], r)),
    Scenario("node-500s", "the eu-central blue node answers 500 to every scoring call",
             lambda w, r: w.fail_file(f"{HOME}-blue").touch(), lambda w, r: w.fail_file(f"{HOME}-blue").unlink()),
    Scenario("node-hangs", "the eu-central blue node accepts calls and never answers (attempt timeout 1 s)",
             lambda w, r: w.go_file(f"{HOME}-blue").unlink(), lambda w, r: w.go_file(f"{HOME}-blue").touch()),
    Scenario("wrong-version", f"the eu-central blue node restarted reporting {WRONG_VERSION}, later fixed",
             lambda w, r: _relaunch(_node(w), r, "--model-version", WRONG_VERSION),
             lambda w, r: _relaunch(_node(w), r)),
    Scenario("slow-node", "the eu-central blue node 400 ms slower per batch; no hedging (gateway a only)",
             lambda w, r: w.slow_file(f"{HOME}-blue").touch(), lambda w, r: w.slow_file(f"{HOME}-blue").unlink(),
             gateways=lambda w: [w.a.url]),
    Scenario("slow-node-hedged", "the same slow node behind a gateway that hedges after 100 ms",
             lambda w, r: w.slow_file(f"{HOME}-blue").touch(), lambda w, r: w.slow_file(f"{HOME}-blue").unlink(),
             gateways=_hedging_gateway),
    Scenario("region-cut-off", "the gateways' connections to eu-central dropped (a TCP proxy), then healed",
             lambda w, r: w.cut_file(HOME).touch(), lambda w, r: w.cut_file(HOME).unlink()),
    Scenario("redis-restart", "Redis SIGKILLed during traffic (admin writes must answer 503), restarted empty",
             _redis_down, _redis_up),
    Scenario("redis-mid-switch", "Redis SIGKILLed while a switch to green waits for the gateways' acknowledgements, "
             "restarted empty", _switch_and_kill_redis, _redis_back_and_converged),
    Scenario("gateway-restart", "the eu-central gateway SIGKILLed under load (clients go to the other), restarted",
             lambda w, r: _kill([w.a]), _gateway_restart),
]


def _served_at_home(world: World) -> bool:
    body = {"pairs": [["上海市南京东路1号", f"上海南京东路1号{time.monotonic()}"]]}
    try:
        status, answer = _http("POST", world.a.url + "/v1/similarity", body, {"X-Forwarded-For": EU}, timeout=5)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    return status == 200 and answer["region"] == HOME  # the body's region is X-Region


SENTINEL_SCENARIOS = [
    Scenario("sentinel-failover", "the Redis primary SIGKILLed; Sentinel promotes the replica; the old one rejoins",
             _primary_down, _primary_back),
]


@dataclass
class Drive:
    """One scenario driven under load: what the clients saw and when each phase began."""

    calls: list[dict[str, object]]
    marks: dict[str, float]  # monotonic seconds: start, fault, heal, ready (healed), stop
    result: Result


def drive(world: World, scenario: Scenario, pre_s: float, fault_s: float, post_s: float) -> Drive:
    """Steady load, ``pre_s`` later the fault, ``fault_s`` later the heal, ``post_s`` more."""
    result = Result(scenario.name, scenario.description)
    # each scenario starts from a healthy deployment: the last one's ejections have run out
    _wait(lambda: _served_at_home(world), 60, "eu-central to serve its clients again")
    out, stop = world.tmp / f"load-{scenario.name}.jsonl", world.tmp / f"stop-{scenario.name}"
    targets = [arg for url in scenario.gateways(world) for arg in ("--gateway", url)]
    load = subprocess.Popen([sys.executable, str(HERE / "load.py"), *targets, "--client", EU, "--client", US,
                             "--seconds", str(pre_s + fault_s + post_s + 300), "--stop-file", str(stop),
                             "--out", str(out)])
    marks = {"start": time.monotonic()}
    try:
        # the experiment's own pacing (how long each phase lasts), not a wait for a condition
        time.sleep(pre_s)
        marks["fault"] = time.monotonic()
        scenario.inject(world, result)
        time.sleep(fault_s)
        marks["heal"] = time.monotonic()
        scenario.heal(world, result)  # returns once what it restarted is ready again
        marks["ready"] = time.monotonic()
        time.sleep(post_s)
        marks["stop"] = time.monotonic()
        stop.touch()
        if load.wait(60) != 0:
            raise RuntimeError(f"the load process exited with {load.returncode}")
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    calls = [json.loads(line) for line in out.read_text().splitlines() if line]
    return Drive(calls, marks, result)


def run_scenario(world: World, scenario: Scenario, pre_s: float, fault_s: float, post_s: float) -> Result:
    run = drive(world, scenario, pre_s, fault_s, post_s)
    calls, result, t_fault, t_heal = run.calls, run.result, run.marks["fault"], run.marks["heal"]
    allowed = [(0.0, frozenset({world.versions["blue"][0]})), *result.versions]
    since = [t for t, _ in allowed]

    def wrong(call: dict[str, object]) -> bool:
        """Any version allowed at some moment between sending and the answer is right: a call
        sent just before a switch may be answered by the new version."""
        first = bisect.bisect_right(since, call["sent"]) - 1  # type: ignore[arg-type]
        last = bisect.bisect_right(since, call["done"]) - 1  # type: ignore[arg-type]
        return not any(call["version"] in versions for _, versions in allowed[first:last + 1])

    result.requests = len(calls)
    result.failed += sum(1 for c in calls if c["status"] != 200)
    result.wrong_version = sum(1 for c in calls if c["status"] == 200 and wrong(c))
    home = [c for c in calls if c["client"] == EU and c["status"] == 200]
    moved = [c["done"] for c in home if c["sent"] >= t_fault and c["region"] != HOME]
    back = [c["done"] for c in home if c["sent"] >= t_heal and c["region"] == HOME]
    result.reroute_ms = round((min(moved) - t_fault) * 1000, 1) if moved else None
    result.recover_ms = round((min(back) - t_heal) * 1000, 1) if back else None
    during = sorted((c["done"] - c["sent"]) * 1000 for c in home if t_fault <= c["sent"] < t_heal)
    result.fault_p99_ms = round(during[min(len(during) - 1, int(0.99 * len(during)))], 1) if during else None
    return result


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.0f} ms"


def write_report(results: list[Result], timing: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                            check=False).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Reliability: chaos scenarios", "",
        (f"Produced by `make chaos` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, on "
         f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}). {timing}"), "",
        ("Two regions (eu-central, us-east), a blue (active) and a green node in each, two gateways, Redis (for "
         "sentinel-failover: a primary, a replica and a Sentinel, everything connected through Sentinel); load "
         "from a separate process: 4 callers, clients of both regions, every call a cache miss. Faults hit "
         "eu-central. *Reroute*: fault -> first answer for an eu-central client from us-east. *Recover*: heal -> "
         "first answer from eu-central again. Targets: zero failed calls (a healthy alternative existed in every "
         "scenario), zero wrong-version answers (a call sent after a switch was acknowledged by every gateway "
         "must get the new version; while one is in flight, either), recovery without an operator. A recover of *-* means eu-central "
         "did not serve again within the post-heal window: a node that kept failing calls is ejected with a "
         "doubling backoff (up to 30 s) and comes back when it runs out."), "",
        "| scenario | requests | failed | wrong version | reroute | recover | eu-central p99 during the fault | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| **{r.name}**: {r.description} | {r.requests:,} | {r.failed} | {r.wrong_version} | "
                     f"{_fmt(r.reroute_ms)} | {_fmt(r.recover_ms)} | {_fmt(r.fault_p99_ms)} | {'; '.join(r.notes)} |")
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run_and_say(world: World, scenario: Scenario, args: argparse.Namespace) -> Result:
    print(f"{scenario.name}: {scenario.description} ...", flush=True)
    result = run_scenario(world, scenario, args.pre_s, args.fault_s, args.post_s)
    print(f"  {result.requests} requests, {result.failed} failed, {result.wrong_version} wrong version, "
          f"reroute {_fmt(result.reroute_ms)}, recover {_fmt(result.recover_ms)}, p99 during the fault "
          f"{_fmt(result.fault_p99_ms)}; {'; '.join(result.notes)}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCENARIOS + SENTINEL_SCENARIOS])
    parser.add_argument("--pre-s", type=float, default=3.0)
    parser.add_argument("--fault-s", type=float, default=6.0)
    parser.add_argument("--post-s", type=float, default=6.0)
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    results = []
    with tempfile.TemporaryDirectory() as tmp, two_region_world(Path(tmp), proxied=HOME, attempt_timeout_ms=1000,
                                                                  watch_window_s=0) as world:
        try:
            results += [_run_and_say(world, scenario, args) for scenario in chosen]
        finally:
            for gateway in _hedging.values():
                gateway.stop()  # type: ignore[attr-defined]
    chosen = [s for s in SENTINEL_SCENARIOS if not args.only or s.name in args.only]
    if chosen:
        with tempfile.TemporaryDirectory() as tmp, two_region_world(Path(tmp), sentinel=True, attempt_timeout_ms=1000,
                                                                      watch_window_s=0) as world:
            results += [_run_and_say(world, scenario, args) for scenario in chosen]
    if args.only:  # the report stands for a whole run
        print(f"a partial run (--only): {REPORT.name} left as it is")
    else:
        write_report(results, f"Each scenario: {args.pre_s:g} s steady, {args.fault_s:g} s of fault, then healed "
                              f"and {args.post_s:g} s more.")
        print(f"wrote {REPORT}")
    return 0 if all(r.failed == 0 and r.wrong_version == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what the gateway adds in front of a node, next to nginx in front of the same node.

Run on demand (not in CI):

    .venv/bin/python tests/bench/gateway_overhead.py                   # fake node, 32 connections, 5 s each
    .venv/bin/python tests/bench/gateway_overhead.py --seconds 3 --no-failover
    .venv/bin/python tests/bench/gateway_overhead.py --node demo       # the demo model behind everything

One run, one node, four paths, one after the other: 1. straight to the node, 2. through
nginx (``/usr/sbin/nginx``, an instance of its own in a temporary directory: upstream
keepalive, HTTP/1.1), 3. through a geogate gateway with ``--cache-ttl-s 0`` (every call
goes to the node: the miss path), 4. through a geogate gateway with the cache on and the
same request every time (every call an ``X-Cache: hit``). Each path is driven by a load
process of its own (aiohttp, ``--connections`` concurrent connections, 1 s of warm-up,
then ``--seconds`` measured); the script prints requests/s, p50 and p99 latency, the
latency each proxy adds over the direct path, and the ratios against nginx.

``--node fake`` (the default) is a tiny aiohttp app in its own process that answers
every scoring call with a fixed body, so what is measured is the proxies, not the
model; ``--node demo`` serves the shipped demo model (slow on a CPU: the model
dominates). ``--gateway-procs N`` runs N gateway processes on one port (SO_REUSEPORT)
and gives nginx as many workers.

``--failover`` (on by default; ``--no-failover`` skips it): two regions with one node
each; under steady load the home region's node is SIGKILLed, once behind a gateway whose
region cn-east fails over to eu-central, once behind nginx with the second node as a
``backup`` server; the script prints, for each, the calls that failed and how long after
the kill the last one failed (and when the second node first answered).

``--json FILE`` also writes every figure to FILE (for ``tests/bench/run_all.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import aiohttp
import yaml
from helpers import GatewayProcess, NodeProcess, RedisServer, free_port, scrape, wait_until

from geogate.gateway.config import GatewayConfig
from geogate.shared.config import nested
from geogate.shared.registry import ColorInfo, Registry
from geogate.shared.store import RedisStore

NGINX = "/usr/sbin/nginx"
FAKE_VERSION = "fake_bench-none-20260101"
BODY = json.dumps({"pairs": [["杭州市文一西路969号", "杭州余杭文一西路969号"]]}, ensure_ascii=False).encode()
HOME, OTHER = "cn-east", "eu-central"
READY_TIMEOUT_S = 60.0


def _run_loop(coro: object) -> object:
    """uvloop where it is installed (the node and the gateway use it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# -- the fake node (its own process) -------------------------------------------------------

async def _fake_node(port: int, region: str, version: str) -> None:
    from aiohttp import web

    answer = json.dumps({"results": [{"score": 0.9, "label": "exact_match"}], "model_version": version,
                         "color": "blue", "region": region}).encode()
    ready = json.dumps({"model_version": version, "checksum": "x", "color": "blue", "region": region}).encode()
    headers = {"X-Model-Version": version, "X-Region": region}

    async def similarity(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json", headers=headers)

    async def health_ready(request: web.Request) -> web.Response:
        return web.Response(body=ready, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/similarity", similarity)
    app.router.add_get("/health/ready", health_ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    await asyncio.Event().wait()  # until SIGTERM or SIGKILL


class FakeNode(NodeProcess):
    """This script's fake node in a process of its own; the harness's readiness and stop."""

    def __init__(self, tmp: Path, region: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"fake-node-{self.port}.log"
        cmd = [sys.executable, __file__, "--fake-node", str(self.port), "--fake-region", region]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def start_node(kind: str, tmp: Path, region: str) -> NodeProcess:
    if kind == "fake":
        return FakeNode(tmp, region)
    return NodeProcess(tmp, "--region", region, "--log-level", "warning")


async def node_identity(node: NodeProcess, kind: str) -> tuple[str, str]:
    if kind == "fake":
        return FAKE_VERSION, "x"
    async with aiohttp.ClientSession() as http:
        _, info = await node.get(http, "/info")
    return str(info["model_version"]), str(info["checksum"])


# -- nginx ---------------------------------------------------------------------------------

class Nginx:
    """A private nginx (master + ``workers``) on a free loopback port, everything in ``dir``."""

    def __init__(self, tmp: Path, upstream: list[str], workers: int, location_extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp / f"nginx-{self.port}"
        self.dir.mkdir()
        servers = "".join(f"        {line};\n" for line in upstream)
        d = self.dir
        conf = d / "nginx.conf"
        conf.write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes {workers};\n"
            f"pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {d}/client_body;\n"
            f"    proxy_temp_path {d}/proxy;\n"
            f"    fastcgi_temp_path {d}/fastcgi;\n"
            f"    uwsgi_temp_path {d}/uwsgi;\n"
            f"    scgi_temp_path {d}/scgi;\n"
            "    keepalive_requests 1000000;\n"  # the gateway has no per-connection request limit either
            "    upstream nodes {\n"
            f"{servers}"
            "        keepalive 32;\n"
            "        keepalive_requests 1000000;\n"
            "    }\n"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            "        location = /__nginx_ready { return 200 \"ok\\n\"; }\n"
            "        location / {\n"
            "            proxy_pass http://nodes;\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n"
            f"{location_extra}"
            "        }\n"
            "    }\n"
            "}\n"
        )
        self.log_path = d / "stdout.log"
        with self.log_path.open("wb") as log:
            # A session of its own, so a stuck master and its workers can be killed as a group.
            self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(d), "-e", str(d / "error.log"),
                                          "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def error_log(self) -> str:
        text = ""
        for name in ("stdout.log", "error.log"):
            path = self.dir / name
            if path.exists():
                text += f"--- {path}\n{path.read_text(errors='replace')[-3000:]}"
        return text

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:

            async def check() -> bool:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.error_log()}")
                try:
                    async with http.get(self.url + "/__nginx_ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            try:
                await wait_until(check, 20, f"nginx on {self.url}")
            except AssertionError as exc:
                raise RuntimeError(f"{exc}\n{self.error_log()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # nginx: fast shutdown, the master stops its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# -- the gateway ---------------------------------------------------------------------------

async def init_registry(url: str, version: str, checksum: str) -> None:
    store = RedisStore(url)
    try:
        await Registry(store).initialize({"blue": ColorInfo(version, checksum)}, "blue", [HOME, OTHER], who="bench")
    finally:
        await store.close()


def gateway_config(path: Path, nodes: list[tuple[str, str]], **gateway: object) -> Path:
    path.write_text(yaml.safe_dump({
        "gateway": nested(GatewayConfig, {"region": HOME, "probe_interval_s": 0.2, "access_log": False, "log_level": "warning",
                    **gateway}),
        "regions": {HOME: {"failover": [OTHER]}, OTHER: {"failover": [HOME]}},
        "nodes": [{"region": region, "color": "blue", "url": url} for region, url in nodes],
    }))
    return path


def start_gateways(tmp: Path, procs: int, config: Path, registry_url: str, *flags: str) -> list[GatewayProcess]:
    """``procs`` gateway processes sharing one port (the gateway listens with SO_REUSEPORT)."""
    first = GatewayProcess(tmp, "--config", str(config), "--registry-url", registry_url, *flags)
    gateways = [first]
    for _ in range(procs - 1):
        gw = GatewayProcess(tmp, "--config", str(config), "--registry-url", registry_url, *flags,
                            "--port", str(first.port))  # the last --port wins
        gw.url = first.url
        gateways.append(gw)
    return gateways


async def wait_gateways(gateways: list[GatewayProcess]) -> None:
    await asyncio.gather(*(gw.wait_ready() for gw in gateways))


# -- the load process ----------------------------------------------------------------------

async def _load(url: str, connections: int, seconds: float, warmup: float, trace: bool,
                extra_headers: dict[str, str] | None = None) -> dict[str, object]:
    """``connections`` clients posting the same body back to back: warm-up, then measured.

    With ``trace`` every measured call is returned as (sent, answered, status, X-Region)
    on CLOCK_MONOTONIC (shared by all processes), and a line ``measuring`` is printed when
    the measured phase starts. ``warmup_calls`` counts the calls of the warm-up (CPU time
    read from outside covers them too).
    """
    latencies: list[float] = []
    events: list[tuple[float, float, int, str]] = []
    statuses: dict[str, int] = {}
    cache: dict[str, int] = {}
    warmup_calls = 0
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    timeout = aiohttp.ClientTimeout(total=30)

    async def client(session: aiohttp.ClientSession, stop_at: float, measure: bool) -> None:
        while (sent := time.monotonic()) < stop_at:
            try:
                async with session.post(url + "/v1/similarity", data=BODY, headers=headers) as resp:
                    await resp.read()
                    status, region, hit = resp.status, resp.headers.get("X-Region", ""), resp.headers.get("X-Cache")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, region, hit = 0, type(exc).__name__, None
            answered = time.monotonic()
            if not measure:
                nonlocal warmup_calls
                warmup_calls += 1
                continue
            key = str(status) if status else region
            statuses[key] = statuses.get(key, 0) + 1
            if hit is not None:
                cache[hit] = cache.get(hit, 0) + 1
            if status == 200:
                latencies.append(answered - sent)
            if trace:
                events.append((sent, answered, status, region))

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stop_at = time.monotonic() + warmup
        await asyncio.gather(*(client(session, stop_at, False) for _ in range(connections)))
        if trace:
            print("measuring", flush=True)
        started = time.monotonic()
        await asyncio.gather(*(client(session, started + seconds, True) for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {"ok": len(latencies), "seconds": elapsed, "statuses": statuses, "cache": cache,
            "warmup_calls": warmup_calls, "latencies_ms": [round(x * 1000, 4) for x in latencies], "events": events}


def print_result(result: object) -> None:
    """The load process's answer, as one JSON line on stdout. The event loop may have left
    stdout non-blocking; a line larger than the pipe would then be cut short (seen: at
    128 KiB), so it is made blocking first."""
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(result), flush=True)


def _load_cmd(url: str, connections: int, seconds: float, warmup: float, trace: bool = False) -> list[str]:
    return [sys.executable, __file__, "--load", url, "--connections", str(connections), "--seconds", str(seconds),
            "--warmup", str(warmup), *(["--trace"] if trace else [])]


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode:
        raise RuntimeError(f"load process exited with {proc.returncode}")
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def run_load(url: str, args: argparse.Namespace) -> dict[str, object]:
    """Drive ``url`` from separate processes (``--load-procs``), so the clients share no loop with a server."""
    share = [args.connections // args.load_procs + (i < args.connections % args.load_procs)
             for i in range(args.load_procs)]
    procs = [subprocess.Popen(_load_cmd(url, n, args.seconds, args.warmup), stdout=subprocess.PIPE, text=True)
             for n in share if n]
    try:
        # Read every process's output at once: one left unread fills its pipe and stalls.
        with ThreadPoolExecutor(len(procs)) as pool:
            parts = list(pool.map(lambda p: _finish(p, args.seconds + args.warmup + 60), procs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    latencies = sorted(x for p in parts for x in p["latencies_ms"])  # type: ignore[attr-defined]
    statuses: dict[str, int] = {}
    cache: dict[str, int] = {}
    for p in parts:
        for key, n in p["statuses"].items():  # type: ignore[attr-defined]
            statuses[key] = statuses.get(key, 0) + n
        for key, n in p["cache"].items():  # type: ignore[attr-defined]
            cache[key] = cache.get(key, 0) + n
    return {
        "rps": sum(p["ok"] / p["seconds"] for p in parts),  # type: ignore[operator]
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "ok": len(latencies),
        "errors": sum(n for key, n in statuses.items() if key != "200"),
        "statuses": statuses,
        "cache": cache,
    }


# -- failover ------------------------------------------------------------------------------

def failover_run(url: str, victim: NodeProcess, args: argparse.Namespace) -> dict[str, float]:
    """Steady load on ``url``; ``--kill-after`` s into the measured phase SIGKILL ``victim``."""
    proc = subprocess.Popen(_load_cmd(url, args.connections, args.failover_seconds, args.warmup, trace=True),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "measuring":
            raise RuntimeError(f"load process said {line!r}")
        time.sleep(args.kill_after)
        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        result = _finish(proc, args.failover_seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [tuple(e) for e in result["events"]]  # type: ignore[attr-defined]
    failed = [e for e in events if e[2] != 200]
    moved = [e[1] for e in events if e[2] == 200 and e[3] == OTHER and e[1] >= killed_at]
    after = [e for e in events if e[0] >= killed_at]
    return {
        "calls": len(events),
        "failed": len(failed),
        "last_failed_ms": (max(e[1] for e in failed) - killed_at) * 1000 if failed else float("nan"),
        "first_moved_ms": (min(moved) - killed_at) * 1000 if moved else float("nan"),
        "home_before": sum(1 for e in events if e[0] < killed_at and e[3] == HOME),
        "other_after": sum(1 for e in after if e[3] == OTHER),
        "statuses": sorted({str(e[2]) if e[2] else str(e[3]) for e in failed}),  # type: ignore[dict-item]
    }


async def _both_regions_healthy(gateways: list[GatewayProcess]) -> None:
    async with aiohttp.ClientSession() as http:

        async def check() -> bool:
            metrics = await scrape(http, gateways[0].url)
            return all(metrics.get(f'geogate_gateway_healthy_nodes{{color="blue",region="{r}"}}') == 1
                       for r in (HOME, OTHER))

        await wait_until(check, READY_TIMEOUT_S, "a healthy node in both regions")


def measure_failover(tmp: Path, redis_url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for proxy in ("geogate", "nginx"):
        with contextlib.ExitStack() as stack:
            home = start_node(args.node, tmp, HOME)
            stack.callback(home.stop)
            other = start_node(args.node, tmp, OTHER)
            stack.callback(other.stop)

            async def nodes_ready(home: NodeProcess = home, other: NodeProcess = other) -> None:
                await asyncio.gather(home.wait_ready(), other.wait_ready())

            asyncio.run(nodes_ready())
            if proxy == "geogate":
                config = gateway_config(tmp / "failover.yaml", [(HOME, home.url), (OTHER, other.url)],
                                        cache_ttl_s=0)
                gateways = start_gateways(tmp, args.gateway_procs, config, redis_url)
                for gw in gateways:
                    stack.callback(gw.stop)
                asyncio.run(wait_gateways(gateways))
                asyncio.run(_both_regions_healthy(gateways))
                url = gateways[0].url
            else:
                nginx = Nginx(tmp, [f"server {home.url[7:]} max_fails=1 fail_timeout=10s",
                                    f"server {other.url[7:]} backup"], args.gateway_procs,
                              "            proxy_next_upstream error timeout http_502 http_503 http_504;\n")
                stack.callback(nginx.stop)
                asyncio.run(nginx.wait_ready())
                url = nginx.url
            out[proxy] = failover_run(url, home, args)
            r = out[proxy]
            print(f"failover {proxy:8s}: {r['calls']} calls, {r['failed']} failed "
                  f"{r['statuses'] if r['failed'] else ''}", flush=True)
    return out


# -- the comparison ------------------------------------------------------------------------

def _fmt(x: float, width: int = 8, digits: int = 2) -> str:
    return f"{x:{width}.{digits}f}" if not math.isnan(x) else f"{'-':>{width}s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", choices=["fake", "demo"], default="fake",
                        help="fake: fixed answers (measures the proxies); demo: the shipped demo model")
    parser.add_argument("--connections", type=int, default=32, help="concurrent client connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--load-procs", type=int, default=1, help="client processes the connections are spread over")
    parser.add_argument("--gateway-procs", type=int, default=1,
                        help="gateway processes on one port; nginx gets as many workers")
    parser.add_argument("--failover", action=argparse.BooleanOptionalAction, default=True,
                        help="also SIGKILL the home node under load, behind geogate and behind nginx")
    parser.add_argument("--failover-seconds", type=float, default=4.0, help="measured seconds of a failover run")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into a failover run of the SIGKILL")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fake-node", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fake-region", default=HOME, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_node:
        _run_loop(_fake_node(args.fake_node, args.fake_region, FAKE_VERSION))
        return
    if args.load:
        print_result(_run_loop(_load(args.load, args.connections, args.seconds, args.warmup, args.trace)))
        return
    if not Path(NGINX).exists():
        sys.exit(f"{NGINX} is not installed")

    results: dict[str, dict[str, object]] = {}
    failover: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        redis = RedisServer(tmp)
        stack.callback(redis.stop)
        node = start_node(args.node, tmp, HOME)
        stack.callback(node.stop)
        asyncio.run(node.wait_ready())
        version, checksum = asyncio.run(node_identity(node, args.node))
        asyncio.run(init_registry(redis.url, version, checksum))

        def report(name: str, r: dict[str, object]) -> None:
            results[name] = r
            extra = f"  X-Cache {r['cache']}" if r["cache"] else ""
            print(f"{name:15s}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                  f"statuses {r['statuses']}{extra}", flush=True)

        report("direct", run_load(node.url, args))

        with contextlib.ExitStack() as phase:
            nginx = Nginx(tmp, [f"server {node.url[7:]}"], args.gateway_procs)
            phase.callback(nginx.stop)
            asyncio.run(nginx.wait_ready())
            report("nginx", run_load(nginx.url, args))

        for name, cache_ttl in (("geogate miss", 0), ("geogate hit", 86_400)):
            with contextlib.ExitStack() as phase:
                config = gateway_config(tmp / f"gateway-{cache_ttl}.yaml", [(HOME, node.url)], cache_ttl_s=cache_ttl)
                gateways = start_gateways(tmp, args.gateway_procs, config, redis.url)
                for gw in gateways:
                    phase.callback(gw.stop)
                asyncio.run(wait_gateways(gateways))
                report(name, run_load(gateways[0].url, args))

        if args.failover:
            failover = measure_failover(tmp, redis.url, args)

    direct, nginx_r, miss, hit = (results[k] for k in ("direct", "nginx", "geogate miss", "geogate hit"))
    print(f"\nnode={args.node} connections={args.connections} (in {args.load_procs} load processes) "
          f"seconds={args.seconds} gateway processes = nginx workers = {args.gateway_procs}")
    print(f"{'path':14s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'+p50 ms':>8s} {'+p99 ms':>8s} {'errors':>7s}")
    for name, r in results.items():
        added = (float("nan"), float("nan")) if r is direct else (r["p50"] - direct["p50"], r["p99"] - direct["p99"])
        print(f"{name:14s} {r['rps']:8.0f} {_fmt(r['p50'])} {_fmt(r['p99'])} {_fmt(added[0])} {_fmt(added[1])} "
              f"{r['errors']:7d}")
    not_hits = sum(n for k, n in hit["cache"].items() if k != "hit")  # type: ignore[attr-defined]
    checks = [
        ("geogate miss / nginx throughput", miss["rps"] / nginx_r["rps"], ">= 0.5", miss["rps"] / nginx_r["rps"] >= 0.5),
        ("geogate hit / nginx throughput", hit["rps"] / nginx_r["rps"], "> 1", hit["rps"] / nginx_r["rps"] > 1),
        ("geogate miss p50 added (ms)", miss["p50"] - direct["p50"], "< 1 ms", miss["p50"] - direct["p50"] < 1),
    ]
    for label, value, target, ok in checks:
        print(f"{label:33s} {value:6.2f}   target {target:7s} {'ok' if ok else 'MISSED'}")
    if not_hits:
        print(f"note: {not_hits} calls of the cache-hit run were not X-Cache: hit ({hit['cache']})")
    if failover:
        print(f"\nfailover: SIGKILL of the {HOME} node {args.kill_after:.1f} s into {args.failover_seconds:.1f} s "
              f"of load ({args.connections} connections)")
        print(f"{'proxy':8s} {'calls':>7s} {'failed':>7s} {'kill->last failure ms':>22s} "
              f"{'kill->first answer from ' + OTHER + ' ms':>36s}")
        for name, r in failover.items():
            print(f"{name:8s} {r['calls']:7d} {r['failed']:7d} {_fmt(r['last_failed_ms'], 22, 1)} "
                  f"{_fmt(r['first_moved_ms'], 36, 1)}")
    if args.json:
        settings = {k: getattr(args, k) for k in ("node", "connections", "seconds", "warmup", "load_procs",
                                                   "gateway_procs", "failover", "failover_seconds", "kill_after")}
        doc = {"benchmark": "gateway_overhead", "settings": settings, "paths": results, "failover": failover,
               "ratios": {label: value for label, value, _, _ in checks}}
        # strict JSON: a percentile of no calls (nan) becomes null
        args.json.write_text(json.dumps(_no_nan(doc), indent=2) + "\n")


def _no_nan(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


if __name__ == "__main__":
    main()

"""`geogate up` / `geogate down`: plans, the supervisor, and whole local deployments
(real redis-server, real nodes with the demo models, real gateways, loopback only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import REPO, STARTUP_S, free_port, wait_until

from geogate.gateway.launcher.deployment import choose_store
from geogate.gateway.launcher.plan import (
    DEFAULT_TOPOLOGY,
    NODE_PORT_OFFSET,
    TEST_GEOIP_DB,
    build_plan,
    sample_client_ip,
)
from geogate.gateway.launcher.supervisor import Child, Supervisor, backoff_s
from geogate.node.demo import DEMO_MODELS
from geogate.node.identity import METADATA_FILE
from geogate.shared.bootstrap import BootstrapError, NodeIdentity, colors_of, seed_registry
from geogate.shared.config import ConfigError
from geogate.shared.registry import Registry
from geogate.shared.store import MemoryStore, RedisStore

CLIENTS = {"cn-east": "111.235.160.1", "eu-central": "89.160.20.113", "us-east": "50.114.0.1"}  # test database
PAIR = {"pairs": [["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]]}
GEOGATE = [sys.executable, "-m", "geogate.shared.cli"]


def version_of(model: str) -> str:
    return str(json.loads((DEMO_MODELS[model] / METADATA_FILE).read_text(encoding="utf-8"))["model_version"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- the plan ------------------------------------------------------------------------------


def test_default_topology_runs_four_regions_with_both_colors() -> None:
    plan = build_plan(DEFAULT_TOPOLOGY, port_base=0)
    assert plan.regions == ("cn-east", "ap-southeast", "eu-central", "us-east")
    assert plan.colors == {"blue": "demo", "green": "demo-v2"} and plan.active == "blue"
    assert {(n.region, n.color) for n in plan.nodes} == {(r, c) for r in plan.regions for c in ("blue", "green")}
    ports = [g.port for g in plan.gateways] + [n.port for n in plan.nodes]
    assert len(set(ports)) == len(ports)
    # residency: cn-east fails over nowhere, so its clients never leave cn-*
    assert plan.topology["regions"]["cn-east"]["failover"] == []


def test_regions_narrow_the_plan_and_its_failover_lists() -> None:
    plan = build_plan(DEFAULT_TOPOLOGY, regions=["eu-central", "us-east"], nodes_per_color=2, port_base=0)
    assert [g.region for g in plan.gateways] == ["eu-central", "us-east"]
    assert len(plan.nodes) == 8 and {n.name for n in plan.nodes} >= {"eu-central-green-2", "us-east-blue-1"}
    assert plan.topology["regions"]["eu-central"]["failover"] == ["us-east"]  # ap-southeast is not running
    gateway_file = plan.gateway_file("http", {"registry_url": "redis://x"})
    assert gateway_file["gateway"]["store"]["registry_url"] == "redis://x"
    assert gateway_file["gateway"]["geo"]["trusted_proxies"] == "127.0.0.0/8,::1"  # the file's own, kept
    assert len(gateway_file["nodes"]) == 8


def test_bad_plans_are_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="unknown regions"):
        build_plan(DEFAULT_TOPOLOGY, regions=["mars-north"], port_base=0)
    with pytest.raises(ConfigError, match="at least 1"):
        build_plan(DEFAULT_TOPOLOGY, nodes_per_color=0, port_base=0)
    with socket.socket() as held:  # a port base whose gateway port is taken
        held.bind(("127.0.0.1", 0))
        held.listen()
        base = held.getsockname()[1]
        with pytest.raises(ConfigError, match=str(base)):
            build_plan(DEFAULT_TOPOLOGY, regions=["us-east"], port_base=base)
    for _ in range(50):  # an explicit base whose ports all happen to be free right now
        base = free_port()
        try:
            plan = build_plan(DEFAULT_TOPOLOGY, regions=["us-east"], port_base=base)
            break
        except ConfigError:
            continue
    assert plan.gateways[0].port == base and plan.nodes[0].port == base + NODE_PORT_OFFSET


def test_store_choice() -> None:
    assert choose_store(None, which=lambda name: None) == "embedded"
    assert choose_store(None, which=lambda name: "/usr/bin/redis-server") == "private"
    assert choose_store("redis://10.0.0.1:6379/0", which=lambda name: None) == "redis://10.0.0.1:6379/0"


def test_sample_client_addresses_land_in_their_region() -> None:
    plan = build_plan(DEFAULT_TOPOLOGY, port_base=0)
    countries = plan.topology["countries"]
    for region in plan.regions:
        ip = sample_client_ip(region, countries, str(TEST_GEOIP_DB))
        assert ip is not None, region
    assert sample_client_ip("cn-east", countries, str(TEST_GEOIP_DB)) == CLIENTS["cn-east"]
    assert sample_client_ip("cn-east", countries, None) is None


# -- seeding the registry ------------------------------------------------------------------


async def test_registry_is_seeded_once_from_node_identities() -> None:
    nodes = [NodeIdentity("http://a", "r1", "blue", "m-v1-1", "aa"), NodeIdentity("http://b", "r2", "blue", "m-v1-1", "aa"),
             NodeIdentity("http://c", "r1", "green", "m-v2-1", "bb")]
    store = MemoryStore()
    registry = Registry(store)
    record, created = await seed_registry(registry, nodes, active="blue", regions=["r1", "r2"], who="t")
    assert created and record.active_color == "blue" and record.colors["green"].model_version == "m-v2-1"
    again, created_again = await seed_registry(registry, nodes[:1] + nodes[2:], active="green", regions=["r1"], who="t")
    assert not created_again and again.epoch == record.epoch and again.active_color == "blue"
    with pytest.raises(BootstrapError, match="color blue"):
        colors_of([*nodes, NodeIdentity("http://d", "r2", "blue", "m-v1-2", "cc")])
    with pytest.raises(BootstrapError, match="active color"):
        await seed_registry(Registry(MemoryStore()), nodes[2:], active="blue", regions=["r1"], who="t")


# -- the supervisor ------------------------------------------------------------------------


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(20) == 30.0


async def test_a_crashing_child_is_restarted_and_a_stop_ends_it(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    # exits at once twice (a crash loop), then stays up
    script = (f"import pathlib,sys,time; p=pathlib.Path({str(marker)!r}); n=len(p.read_text()) if p.exists() else 0; "
              "p.write_text('x'*(n+1)); sys.exit(3) if n < 2 else time.sleep(600)")
    events: list[str] = []
    supervisor = Supervisor(on_change=lambda c: events.append(c.state))
    child = await supervisor.start(Child("crashy", "node", [sys.executable, "-c", script], tmp_path / "c.log"))
    await wait_until(lambda: child.restarts == 2 and child.state == "running", 20, "two restarts")
    assert child.last_exit == 3 and events.count("restarting") == 2
    pid = child.pid
    assert pid is not None and alive(pid)
    await supervisor.stop(timeout_s=10)
    assert child.state == "stopped" and not alive(pid)


def test_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL of the supervising process leaves no orphan."""
    pid_file = tmp_path / "child.pid"
    program = f"""
import asyncio, sys, pathlib
sys.path.insert(0, {str(REPO)!r})
from geogate.gateway.launcher.supervisor import Child, Supervisor
async def main():
    s = Supervisor()
    c = await s.start(Child("sleeper", "node", [sys.executable, "-c", "import time; time.sleep(600)"],
                            pathlib.Path({str(tmp_path / 's.log')!r})))
    pathlib.Path({str(pid_file)!r}).write_text(str(c.pid))
    await asyncio.sleep(600)
asyncio.run(main())
"""
    launcher = subprocess.Popen([sys.executable, "-c", program])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and launcher.poll() is None, "the supervisor did not start its child"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        assert alive(child)
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the child outlived its launcher"
            time.sleep(0.02)
    finally:
        if launcher.poll() is None:
            launcher.kill()


# -- whole deployments ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def detached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """`geogate up --detach` with two regions and one node per color, as CI runs it."""
    run_dir = tmp_path_factory.mktemp("up")
    done = subprocess.run([*GEOGATE, "up", "--detach", "--run-dir", str(run_dir), "--regions", "cn-east,eu-central",
                           "--nodes-per-color", "1", "--port-base", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=STARTUP_S * 2, check=False)
    try:
        yield run_dir, done
    finally:
        subprocess.run([*GEOGATE, "down", "--run-dir", str(run_dir)], cwd=REPO, capture_output=True, timeout=120,
                       check=False)


def test_up_detach_reports_progress_and_a_ready_summary(detached: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, done = detached
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cn-east-blue-1: loading" in done.stdout or "cn-east-blue-1: warming" in done.stdout  # progress shown
    assert "geogate is up: 2 regions, 4 nodes" in done.stdout
    assert version_of("demo") in done.stdout and version_of("demo-v2") in done.stdout
    assert f"X-Forwarded-For: {CLIENTS['eu-central']}" in done.stdout  # a ready-to-paste curl per region
    assert f"geogate down --run-dir {run_dir}" in done.stdout
    assert "anonymous access: ON (a demo" in done.stdout and "geogate admin client-add" in done.stdout
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    assert f"dashboard: {endpoints['gateways']['cn-east']}/dashboard" in done.stdout


def test_admin_cli_finds_the_deployment_by_its_run_dir(detached: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """No --url, no token: the run directory says which gateway and which token."""
    run_dir, _ = detached
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOGATE_ADMIN")}
    done = subprocess.run([*GEOGATE, "admin", "status", "--run-dir", str(run_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ACTIVE blue" in done.stdout and "cn-east" in done.stdout and "eu-central" in done.stdout


def test_endpoints_file_is_complete(detached: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, _ = detached
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    assert set(endpoints["gateways"]) == {"cn-east", "eu-central"}
    assert all(listening(url) for url in endpoints["gateways"].values())
    nodes = endpoints["nodes"]
    assert sorted((n["region"], n["color"]) for n in nodes) == [
        ("cn-east", "blue"), ("cn-east", "green"), ("eu-central", "blue"), ("eu-central", "green")]
    assert all(alive(n["pid"]) and n["url"].startswith("http://127.0.0.1:") for n in nodes)
    assert endpoints["store"].startswith("redis://127.0.0.1:")
    token = Path(endpoints["admin_token_file"])
    assert token == run_dir / "admin-token" and len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


async def test_every_gateway_serves_its_region_on_the_active_version(
    detached: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = detached
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    async with aiohttp.ClientSession() as session:
        for region, url in endpoints["gateways"].items():
            for client_region in ("cn-east", "eu-central"):  # the client's region decides, not the gateway's
                headers = {"X-Forwarded-For": CLIENTS[client_region]}
                pair = [f"{region}市{client_region}路1号", f"{region}市{client_region}路1号"]  # a miss each time
                async with session.post(url + "/v1/similarity", json={"pairs": [pair]}, headers=headers) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert resp.headers["X-Cache"] == "miss"
                    assert resp.headers["X-Region"] == client_region, (region, resp.headers["X-Route"])
                    assert f"home={client_region}" in resp.headers["X-Route"]
                    assert resp.headers["X-Model-Version"] == version_of("demo")
                    assert body["results"][0]["label"] == "exact_match", pair
        green = [n for n in endpoints["nodes"] if n["color"] == "green"]
        for node in green:  # the preview color serves the second version, so a switch will show
            async with session.get(node["url"] + "/health/ready") as resp:
                assert (await resp.json())["model_version"] == version_of("demo-v2")
    store = RedisStore(endpoints["store"])
    try:
        record = await Registry(store).read()
    finally:
        await store.close()
    assert record.active_color == "blue" and set(record.regions) == {"cn-east", "eu-central"}
    assert record.colors["green"].model_version == version_of("demo-v2")


async def test_a_killed_node_comes_back(detached: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, _ = detached
    path = run_dir / "endpoints.json"
    victim = next(n for n in json.loads(path.read_text())["nodes"] if (n["region"], n["color"]) == ("eu-central", "blue"))
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        node = next(n for n in json.loads(path.read_text())["nodes"] if n["name"] == victim["name"])
        return bool(node["pid"]) and node["pid"] != victim["pid"] and alive(node["pid"])

    await wait_until(replaced, 30, "the launcher to restart the node")
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                async with session.get(victim["url"] + "/health/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, STARTUP_S, "the restarted node to be ready")
    status = json.loads((run_dir / "status.json").read_text())
    assert next(r for r in status["rows"] if r["name"] == victim["name"])["restarts"] >= 1


def test_down_leaves_no_process_and_no_bound_port(detached: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    run_dir, _ = detached
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    launcher = int((run_dir / "launcher.pid").read_text())
    pids = [launcher] + [n["pid"] for n in endpoints["nodes"]]
    done = subprocess.run([*GEOGATE, "down", "--run-dir", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [p for p in pids if alive(p)]
    urls = [*endpoints["gateways"].values(), *(n["url"] for n in endpoints["nodes"]), endpoints["store"]]
    assert not [u for u in urls if listening(u)]
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "stopped"
    again = subprocess.run([*GEOGATE, "down", "--run-dir", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and "no launcher is running" in again.stdout


async def test_foreground_embedded_tls_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """No Redis (the embedded store: gateways inside the launcher), HTTPS everywhere, and
    SIGINT as a terminal's Ctrl-C sends it."""
    run_dir = tmp_path / "run"
    out = (tmp_path / "out.txt").open("w")
    argv = [*GEOGATE, "up", "--run-dir", str(run_dir), "--regions", "us-east", "--port-base", "0", "--store", "embedded",
            "--tls"]
    # Popen in a coroutine on purpose: it runs for the whole test, and nothing waits on it here
    proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()
            try:
                return json.loads((run_dir / "status.json").read_text())["phase"] == "ready"
            except (OSError, ValueError):
                return False

        await wait_until(ready, STARTUP_S * 2, "the deployment to be ready")
        endpoints = json.loads((run_dir / "endpoints.json").read_text())
        assert endpoints["store"] == "embedded" and endpoints["gateways"]["us-east"].startswith("https://")
        ctx = ssl.create_default_context(cafile=endpoints["tls_ca"])
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
            session.post(endpoints["gateways"]["us-east"] + "/v1/similarity", json=PAIR,
                         headers={"X-Forwarded-For": CLIENTS["us-east"]}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Region"] == "us-east"
            assert resp.headers["X-Model-Version"] == version_of("demo")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    text = (tmp_path / "out.txt").read_text()
    assert "store embedded" in text and "stopped." in text
    assert not [n for n in endpoints["nodes"] if alive(n["pid"])]
    assert not [u for u in [*endpoints["gateways"].values(), *(n["url"] for n in endpoints["nodes"])] if listening(u)]

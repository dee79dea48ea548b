"""The admin API end to end: two regions with blue (demo) and green (demo-v2) nodes, real
Redis, two gateways; tokens for a viewer, an operator and an admin.

Tests run in file order and leave blue active behind them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from admin_world import EU, NAMES, TOKENS, US, World, auth, two_region_world
from helpers import REPO, GatewayProcess, NodeProcess, wait_until

from geogate.gateway.control.auth import hash_token
from geogate.node.demo import DEMO_MODELS
from geogate.shared.bootstrap import read_identities


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with two_region_world(tmp_path_factory.mktemp("admin-world")) as w:
        yield w


async def admin(http: aiohttp.ClientSession, gw: GatewayProcess, method: str, path: str, role: str | None = "operator",
                body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = auth(role) if role else {}
    async with http.request(method, gw.url + "/admin/v1" + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def score(http: aiohttp.ClientSession, gw: GatewayProcess, client: str, tag: str,
                **headers: str) -> tuple[int, dict[str, str]]:
    body = {"pairs": [[f"上海市{tag}路1号", f"上海{tag}路1号"]]}
    h = {"X-Forwarded-For": client, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with http.post(gw.url + "/v1/similarity", json=body, headers=h) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


@dataclass
class Call:
    sent: float
    done: float
    status: int
    version: str
    region: str
    gateway: str
    rid: str = ""


class Load:
    """Steady client calls from a few concurrent callers, every one recorded."""

    def __init__(self, http: aiohttp.ClientSession, gateways: list[GatewayProcess], clients: list[str],
                 callers: int = 4) -> None:
        self.http, self.gateways, self.clients, self.callers = http, gateways, clients, callers
        self.calls: list[Call] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:  # noqa: PYI034 - a plain class, no subclasses
        self._task = asyncio.create_task(self._run())
        await wait_until(lambda: len(self.calls) >= 10, 30, "load to start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        async def caller(i: int) -> None:
            n = 0
            while not self._stop.is_set():
                gw = self.gateways[(i + n) % len(self.gateways)]
                client = self.clients[(i + n) % len(self.clients)]
                sent = time.monotonic()
                try:
                    status, headers = await score(self.http, gw, client, f"{i}-{n}-{sent}")
                except aiohttp.ClientError:
                    status, headers = 0, {}
                self.calls.append(Call(sent, time.monotonic(), status, headers.get("X-Model-Version", ""),
                                       headers.get("X-Region", ""), gw.url, headers.get("X-Request-ID", "")))
                n += 1

        await asyncio.gather(*(caller(i) for i in range(self.callers)))


# -- access ------------------------------------------------------------------------------

ENDPOINTS = [  # (method, path, body, least role)
    ("GET", "/status", None, "viewer"),
    ("GET", "/audit", None, "viewer"),
    ("GET", f"/route?ip={EU}", None, "viewer"),
    ("GET", "/drills/none", None, "viewer"),
    ("POST", "/colors/green", {"model_version": "x-y-z", "sha256": "", "reason": "r"}, "admin"),
    ("POST", "/switch", {"to": "green", "reason": "r", "dry_run": True}, "operator"),
    ("POST", "/rollback", {"reason": "r"}, "operator"),
    ("POST", "/canary", {"percent": 0, "reason": "r"}, "operator"),
    ("POST", "/regions/eu-central/drain", {"reason": "r"}, "operator"),
    ("POST", "/drills", {"region": "eu-central", "reason": "r", "duration_s": 1}, "operator"),
]


async def test_every_endpoint_needs_a_valid_token_and_the_right_role(world: World, http: aiohttp.ClientSession) -> None:
    order = ["viewer", "operator", "admin"]
    for method, path, body, least in ENDPOINTS:
        async with http.request(method, world.a.url + "/admin/v1" + path, json=body) as resp:
            assert resp.status == 401, (path, await resp.text())
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"]["code"] == "unauthorized"
        wrong = {"Authorization": "Bearer not-a-token"}
        async with http.request(method, world.a.url + "/admin/v1" + path, json=body, headers=wrong) as resp:
            assert resp.status == 401, path
        for role in order[: order.index(least)]:
            status, answer = await admin(http, world.a, method, path, role, body)
            assert status == 403 and answer["error"]["code"] == "forbidden", (path, role, answer)
            assert NAMES[role] in answer["error"]["message"]
    for method, path, _, least in ENDPOINTS:
        if method == "GET":
            status, _ = await admin(http, world.a, method, path, least)
            assert status == (404 if "drills" in path else 200), path
    # tokens are never logged, not even the wrong one
    logs = world.a.log()
    assert not [t for t in [*TOKENS.values(), "not-a-token"] if t in logs]


async def test_status_lists_regions_nodes_and_gateways(world: World, http: aiohttp.ClientSession) -> None:
    async def both_gateways() -> bool:
        _, body = await admin(http, world.a, "GET", "/status", "viewer")
        return body["gateways"] is not None and len(body["gateways"]) == 2

    await wait_until(both_gateways, 20, "both gateways' heartbeats")
    _, body = await admin(http, world.b, "GET", "/status", "viewer")
    assert body["registry"]["active_color"] == "blue"
    assert set(body["regions"]) == {"eu-central", "us-east"}
    green = body["regions"]["eu-central"]["colors"]["green"][0]
    assert green["healthy"] and green["model_version"] == world.versions["green"][0]
    assert green["checksum"] == world.versions["green"][1] and "queue_depth" in green and "p99_ms" in green
    assert {g["region"] for g in body["gateways"]} == {"eu-central", "us-east"}
    assert all(g["epoch"] == body["registry"]["epoch"] for g in body["gateways"])


# -- the switch ------------------------------------------------------------------------------


async def test_dry_run_reports_pre_checks_and_changes_nothing(world: World, http: aiohttp.ClientSession) -> None:
    _, before = await admin(http, world.a, "GET", "/status", "viewer")
    status, body = await admin(http, world.a, "POST", "/switch", "operator",
                               {"to": "green", "reason": "see the pre-checks", "dry_run": True})
    assert status == 200 and body["dry_run"] and body["would_switch"], body
    report = body["report"]
    assert report["to_version"] == world.versions["green"][0]
    assert [r["ok"] for r in report["regions"]] == [True, True]
    golden = report["golden"]
    assert golden["pairs"] >= 40 and golden["addresses"] >= 20
    assert golden["label_agreement"] == 1.0 and golden["max_drift"] < 0.05
    _, after = await admin(http, world.a, "GET", "/status", "viewer")
    assert after["registry"]["epoch"] == before["registry"]["epoch"]


async def test_pre_checks_block_missing_nodes_a_wrong_checksum_and_drift(world: World,
                                                                        http: aiohttp.ClientSession) -> None:
    green_version, green_sum = world.versions["green"]

    async def register_green(version: str, sha256: str) -> None:
        status, body = await admin(http, world.a, "POST", "/colors/green", "admin",
                                   {"model_version": version, "sha256": sha256, "reason": "test"})
        assert status == 200, body

    async def refused() -> dict:  # type: ignore[type-arg]
        status, body = await admin(http, world.a, "POST", "/switch", "operator", {"to": "green", "reason": "try"})
        assert status == 422 and body["error"]["code"] == "precheck_failed", body
        return body

    try:
        # missing nodes: no node serves the version registered for green
        await register_green("mgeo_demo_tiny-nowhere-20260101", green_sum)
        body = await refused()
        assert not any(r["ok"] for r in body["report"]["regions"])
        assert "registered mgeo_demo_tiny-nowhere-20260101" in body["error"]["message"]
        assert body["report"]["golden"] is None  # nothing to score it with
        # a wrong checksum
        await register_green(green_version, "0" * 64)
        assert "checksum" in (await refused())["error"]["message"]
        # drift: a green node in eu-central whose labels are swapped (not_match <-> exact_match)
        flipped = NodeProcess(world.tmp, "--region", "eu-central", "--color", "green", "--model",
                              str(_flipped_model(world.tmp / "flipped")), "--model-version",
                              "mgeo_demo_tiny-flipped-20260101", "--registry-url", world.redis.url)
        try:
            await flipped.wait_ready()
            (identity,) = await read_identities([flipped.url], wait_s=10)
            await register_green(identity.model_version, identity.checksum)

            async def flipped_known() -> bool:  # the gateway finds the node through its heartbeat
                _, body = await admin(http, world.a, "GET", "/status", "viewer")
                return any(n["url"] == flipped.url and n["healthy"]
                           for n in body["regions"]["eu-central"]["colors"]["green"])

            await wait_until(flipped_known, 20, "the gateway to see the flipped node")
            body = await refused()
            golden = body["report"]["golden"]
            assert golden["to_node"] == flipped.url, golden
            assert golden["label_agreement"] < 0.95 and golden["examples"], golden
            assert "golden set" in body["error"]["message"]
        finally:
            flipped.stop()
    finally:
        await register_green(green_version, green_sum)
    _, after = await admin(http, world.a, "GET", "/status", "viewer")
    assert after["registry"]["active_color"] == "blue"
    _, audit = await admin(http, world.a, "GET", "/audit?count=10", "viewer")
    assert {(e["action"], e["who"]) for e in audit["entries"]} >= {("register_color", "ada")}
    assert (await admin(http, world.a, "POST", "/colors/red", "admin",
                        {"model_version": "a-b-c", "sha256": "", "reason": "x"}))[0] == 404


def _flipped_model(out: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(DEMO_MODELS["demo"], out)
    path = out / "similarity" / "model.safetensors"
    weights = load_file(path)
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = weights[key][torch.tensor([2, 1, 0])].contiguous()
    save_file(weights, path, metadata={"format": "pt"})
    return out


async def _switch(http: aiohttp.ClientSession, gw: GatewayProcess, to: str, path: str = "/switch") -> float:
    body = {"to": to, "reason": "test"} if path == "/switch" else {"reason": "test"}
    status, answer = await admin(http, gw, "POST", path, "operator", body)
    assert status == 200, answer
    assert len(answer["gateways_applied"]) == 2 and not answer["gateways_not_confirmed"], answer
    return time.monotonic()


async def test_switches_under_load_fail_nothing_and_never_serve_the_old_version_after_the_answer(
    world: World, http: aiohttp.ClientSession,
) -> None:
    versions = {c: v for c, (v, _) in world.versions.items()}
    # (switch answered, next switch sent, the version every call in between must carry): a call sent after
    # an answer and finished before the next switch was even asked for may carry only that version
    phases: list[tuple[float, float, str]] = []
    async with Load(http, [world.a, world.b], [EU, US], callers=4) as load:
        # green via one gateway, back via the other, and once more: a flapping switch
        for gw, color, path in ((world.a, "green", "/switch"), (world.b, "blue", "/rollback"),
                                (world.a, "green", "/switch"), (world.b, "blue", "/rollback")):
            if phases:
                phases[-1] = (phases[-1][0], time.monotonic(), phases[-1][2])
            answered = await _switch(http, gw, color, path)
            phases.append((answered, float("inf"), versions[color]))
            count = len(load.calls)
            await wait_until(lambda count=count: len(load.calls) >= count + 20, 30, "calls after the switch")
    calls = load.calls
    assert len(calls) > 100
    assert [c for c in calls if c.status != 200] == []  # zero failed calls
    for answered, next_sent, version in phases:
        after = [c for c in calls if c.sent > answered and c.done < next_sent]
        assert after, "no calls in a phase"
        stale = [c for c in after if c.version != version]
        assert stale == [], (f"{len(stale)} calls sent after the switch answered ({answered}, phase "
                             f"{phases.index((answered, next_sent, version))}) got {stale[0].version}: {stale}")


async def test_two_operators_switching_at_once_one_wins_the_other_gets_409(world: World,
                                                                          http: aiohttp.ClientSession) -> None:
    results = await asyncio.gather(
        admin(http, world.a, "POST", "/switch", "operator", {"to": "green", "reason": "operator one"}),
        admin(http, world.b, "POST", "/switch", "operator", {"to": "green", "reason": "operator two"}),
    )
    assert sorted(status for status, _ in results) == [200, 409], results
    loser = next(body for status, body in results if status == 409)
    assert loser["error"]["code"] == "conflict"
    await _switch(http, world.a, "blue", "/rollback")


async def test_a_green_that_fails_after_the_switch_is_rolled_back_automatically(
    world: World, http: aiohttp.ClientSession,
) -> None:
    for i in range(20):  # a baseline for blue through gateway a
        assert (await score(http, world.a, EU, f"baseline-{i}"))[0] == 200
    await _switch(http, world.a, "green")
    for region in ("eu-central", "us-east"):
        world.fail_file(f"{region}-green").touch()
    try:
        n = 0

        async def rolled_back() -> bool:
            nonlocal n
            n += 1
            await score(http, world.a, EU, f"failing-{n}")
            _, body = await admin(http, world.a, "GET", "/status", "viewer")
            return body["registry"]["active_color"] == "blue"

        await wait_until(rolled_back, 40, "the automatic rollback")
    finally:
        for region in ("eu-central", "us-east"):
            world.fail_file(f"{region}-green").unlink()
    _, body = await admin(http, world.a, "GET", "/status", "viewer")
    assert body["watch"]["state"] == "rolled_back" and "error rate" in body["watch"]["reason"]
    _, audit = await admin(http, world.a, "GET", "/audit?count=1", "viewer")
    newest = audit["entries"][0]
    assert (newest["action"], newest["who"]) == ("rollback", "auto-rollback")
    assert newest["before"]["active_color"] == "green" and newest["after"]["active_color"] == "blue"

    async def blue_serves() -> bool:
        status, headers = await score(http, world.a, EU, f"after-{time.monotonic()}")
        return status == 200 and headers["X-Model-Version"] == world.versions["blue"][0]

    await wait_until(blue_serves, 30, "blue to serve again")

    async def green_recovered() -> bool:  # its nodes were ejected for failing; they come back by themselves
        status, headers = await score(http, world.a, EU, f"green-{time.monotonic()}", X_MGeo_Version="canary")
        return status == 200 and headers["X-Model-Version"] == world.versions["green"][0]

    await wait_until(green_recovered, 60, "the green nodes to be taken back")


# -- canary, regions, routing ------------------------------------------------------------------


async def test_canary_share_is_sticky_per_request(world: World, http: aiohttp.ClientSession) -> None:
    status, body = await admin(http, world.a, "POST", "/canary", "operator", {"percent": 50, "reason": "try green"})
    assert status == 200 and body["canary_percent"] == 50 and body["preview_color"] == "green"
    try:
        colors = {}
        for i in range(40):
            s, headers = await score(http, world.a, EU, f"canary-{i}")
            assert s == 200
            colors[i] = headers["X-Color"]
        assert 8 <= sum(c == "green" for c in colors.values()) <= 32, colors
        for i in range(0, 40, 4):  # the same request lands on the same color again
            assert (await score(http, world.a, EU, f"canary-{i}"))[1]["X-Color"] == colors[i]
        assert (await score(http, world.a, EU, "forced", X_MGeo_Version="canary"))[1]["X-Color"] == "green"
    finally:
        status, _ = await admin(http, world.a, "POST", "/canary", "operator", {"percent": 0, "reason": "done"})
        assert status == 200
    for i in range(0, 40, 8):
        assert (await score(http, world.a, EU, f"canary-{i}"))[1]["X-Color"] == "blue"


async def test_fail_drain_restore_a_region_and_the_routing_dry_run(world: World, http: aiohttp.ClientSession) -> None:
    _, route = await admin(http, world.b, "GET", f"/route?ip={EU}", "viewer")
    assert (route["country"], route["home"], route["node"]["region"]) == ("SE", "eu-central", "eu-central")
    for action, state in (("fail", "failed"), ("drain", "drained")):
        status, body = await admin(http, world.a, "POST", f"/regions/eu-central/{action}", "operator",
                                   {"reason": f"{action} drill"})
        assert status == 200 and body["state"] == state and len(body["gateways_applied"]) == 2
        s, headers = await score(http, world.b, EU, f"{action}-1")
        assert s == 200 and headers["X-Region"] == "us-east" and "failover" in headers["X-Route"]
        _, route = await admin(http, world.b, "GET", f"/route?ip={EU}", "viewer")
        assert route["node"]["region"] == "us-east" and "eu-central" in route["skipped"]
        status, body = await admin(http, world.a, "POST", "/regions/eu-central/restore", "operator",
                                   {"reason": "back"})
        assert status == 200 and body["state"] == "active"
    s, headers = await score(http, world.b, EU, "restored")
    assert s == 200 and headers["X-Region"] == "eu-central"
    assert (await admin(http, world.a, "POST", "/regions/mars/fail", "operator", {"reason": "x"}))[0] == 404
    assert (await admin(http, world.a, "POST", "/regions/eu-central/melt", "operator", {"reason": "x"}))[0] == 404
    status, body = await admin(http, world.a, "POST", "/regions/eu-central/fail", "operator", {})
    assert status == 422 and "reason" in body["error"]["message"]
    status, body = await admin(http, world.a, "GET", "/route?ip=not-an-ip", "viewer")
    assert status == 422


async def test_drill_report_matches_what_the_clients_saw(world: World, http: aiohttp.ClientSession) -> None:
    async with Load(http, [world.a], [EU], callers=3) as load:
        status, report = await admin(http, world.a, "POST", "/drills", "operator",
                                     {"region": "eu-central", "duration_s": 3, "mode": "fail", "wait": True,
                                      "reason": "quarterly failover drill"})
    assert status == 200 and report["state"] == "done", report
    seen_failed = [c for c in load.calls if c.status != 200]
    assert report["during"]["failed"] + report["after"]["failed"] == len(seen_failed) == 0
    assert report["reroute_ms"] is not None and report["reroute_ms"] < 3000
    assert report["recover_ms"] is not None
    # every call that arrived while the region was failed was served by the next region
    assert report["during"]["served_by"].get("us-east", 0) > 0 and "eu-central" not in report["during"]["served_by"]
    assert report["after"]["served_by"].get("eu-central", 0) > 0
    during_client = sum(1 for c in load.calls if c.region == "us-east")  # every rerouted call the clients saw
    assert report["during"]["served_by"]["us-east"] == during_client
    _, audit = await admin(http, world.a, "GET", "/audit?count=2", "viewer")
    assert [e["action"] for e in audit["entries"]] == ["region_active", "region_failed"]
    assert all(e["who"] == "drill:otto" for e in audit["entries"])
    status, body = await admin(http, world.a, "POST", "/drills", "operator",
                               {"region": "eu-central", "duration_s": 1, "mode": "kill", "reason": "x"})
    assert status == 422 and "kill drills" in body["error"]["message"]  # drill_kill is off here


# -- the command line and the admin port ---------------------------------------------------------


def test_admin_cli_tables_and_json(world: World) -> None:
    token = world.tmp / "otto.token"
    token.write_text(TOKENS["operator"])
    cli = [sys.executable, "-m", "geogate.shared.cli", "admin"]
    common = ["--url", world.a.url, "--token-file", str(token)]
    done = subprocess.run([*cli, "status", *common], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ACTIVE blue" in done.stdout and "eu-central" in done.stdout and "us-east" in done.stdout
    done = subprocess.run([*cli, "status", *common, "--json"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert json.loads(done.stdout)["registry"]["active_color"] == "blue"
    done = subprocess.run([*cli, "switch", *common, "--to", "green", "--dry-run", "--reason", "cli"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "passed" in done.stdout and "dry run: nothing changed" in done.stdout
    done = subprocess.run([*cli, "switch", *common, "--to", "nope", "--reason", "cli"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "422 invalid_request" in done.stderr and "nope" in done.stderr
    done = subprocess.run([*cli, "hash-token"], input="abc\n", cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.strip() == hash_token("abc")
    done = subprocess.run([*cli, "route", *common, "--ip", US], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "home us-east" in done.stdout and "serves" in done.stdout and "answer: served" in done.stdout
    assert not done.stdout.lstrip().startswith("{")  # a table, like every other command; --json for scripts


def test_admin_cli_says_what_is_wrong_with_the_token(world: World, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "geogate.shared.cli", "admin"]
    empty_run_dir = ["--run-dir", str(tmp_path / "no-deployment")]
    missing = tmp_path / "nope.token"
    done = subprocess.run([*cli, "status", "--url", world.a.url, "--token-file", str(missing), *empty_run_dir],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"cannot read the admin token file {missing}" in done.stderr and "cannot reach" not in done.stderr
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-a-token\n")
    done = subprocess.run([*cli, "status", "--url", world.a.url, "--token-file", str(wrong), *empty_run_dir],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "401" in done.stderr and "pass --token-file" in done.stderr


async def test_admin_api_on_its_own_port_and_tls_only(world: World, http: aiohttp.ClientSession) -> None:
    from helpers import free_port

    port = free_port()
    gw = GatewayProcess(world.tmp, "--config", str(world.config), "--region", "eu-central", "--admin-port", str(port))
    plain = GatewayProcess(world.tmp, "--config", str(world.config), "--region", "eu-central",
                           "--admin-tls-only")
    try:
        await gw.wait_ready()
        await plain.wait_ready()
        assert (await admin(http, gw, "GET", "/status", "viewer"))[0] == 404  # not on the client port
        async with http.get(f"http://127.0.0.1:{port}/admin/v1/status", headers=auth("viewer")) as resp:
            assert resp.status == 200
        async with http.post(f"http://127.0.0.1:{port}/v1/similarity", json={"pairs": [["a", "b"]]}) as resp:
            assert resp.status == 404  # and no client API on the admin port
        status, body = await admin(http, plain, "GET", "/status", "viewer")
        assert status == 403 and "TLS" in body["error"]["message"]
    finally:
        gw.stop()
        plain.stop()


def test_a_token_that_is_not_utf8_is_a_401(world: World) -> None:
    """Found by fuzzing: it used to raise inside the token check (a 500)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(world.a.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest("GET", "/admin/v1/whoami")
        conn.putheader("Authorization", b"Bearer \xff\xfe")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 401 and json.loads(resp.read())["error"]["code"] == "unauthorized"
    finally:
        conn.close()


async def test_the_admin_api_documents_itself(world: World, http: aiohttp.ClientSession) -> None:
    async with http.get(world.a.url + "/admin/v1/openapi.json") as resp:  # no token: it names routes, not secrets
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "geogate admin API"
    paths = doc["paths"]
    assert {"/admin/v1/status", "/admin/v1/switch", "/admin/v1/rollback", "/admin/v1/canary",
            "/admin/v1/regions/{region}/{action}", "/admin/v1/drills", "/admin/v1/drills/{id}", "/admin/v1/audit",
            "/admin/v1/route", "/admin/v1/colors/{color}", "/admin/v1/clients", "/admin/v1/clients/{name}",
            "/admin/v1/clients/{name}/keys", "/admin/v1/clients/{name}/keys/{id}/revoke",
            "/admin/v1/clients/{name}/revoke", "/admin/v1/whoami", "/admin/v1/events"} == set(paths)
    switch = paths["/admin/v1/switch"]["post"]
    assert switch["x-geogate-role"] == "operator" and "422" in switch["responses"]
    body = switch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][body]["required"]) == {"to", "reason"}
    for path, methods in paths.items():  # every documented read answers as documented, with the role it names
        operation = methods.get("get")
        if operation is None or "{" in path or path.endswith(("/events", "/route")):
            continue
        status, _ = await admin(http, world.a, "GET", path.removeprefix("/admin/v1"), operation["x-geogate-role"])
        assert str(status) in operation["responses"], path
        status, _ = await admin(http, world.a, "GET", path.removeprefix("/admin/v1"), None)
        assert status == 401 and "401" in operation["responses"]

"""The gateway end to end: real node processes (demo model), real Redis, real HTTP(S).

One module-wide world: cn-east with one node, eu-central with one good node and one that
serves another model version, cn-north with none (its clients may only be served in
cn-*), a registry naming the demo model as blue, and a gateway in eu-central that trusts
loopback as a proxy, so a test says which client it stands for with X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from helpers import GatewayProcess, NodeProcess, RedisServer, scrape, wait_until

from geogate.gateway.config import GatewayConfig
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.shared.config import nested
from geogate.shared.heartbeats import Heartbeats, NodeHeartbeat
from geogate.shared.registry import ColorInfo, Registry
from geogate.shared.store import RedisStore

GEOIP = TEST_GEOIP_DB  # MaxMind's test database, shipped for geogate up
CN, GB, PH, UNKNOWN = "175.16.199.0", "81.2.69.160", "202.196.224.1", "8.8.8.8"


@dataclass
class World:
    redis: RedisServer
    nodes: dict[str, NodeProcess]
    gateway: GatewayProcess
    config: Path
    version: str
    tmp: Path


def write_config(path: Path, nodes: dict[str, NodeProcess], **gateway: object) -> Path:
    path.write_text(yaml.safe_dump({
        # No deep probe here, so that a node's request counter counts client calls only
        # (tests/test_upstream.py checks the deep probe).
        "gateway": nested(GatewayConfig, {"trusted_proxies": "127.0.0.0/8", "geoip_db": str(GEOIP), "probe_interval_s": 0.2,
                    "deep_probe_interval_s": 0, **gateway}),
        "regions": {"cn-east": {"failover": ["eu-central"]}, "eu-central": {"failover": ["cn-east"]},
                    "cn-north": {"failover": ["cn-east", "eu-central"], "residency": ["cn-*"]}},
        "countries": {"CN": "cn-east", "GB": "eu-central", "SE": "eu-central", "PH": "cn-north", "JP": "cn-east",
                      "FR": "eu-central"},
        "nodes": [{"region": r, "color": "blue", "url": n.url} for r, n in
                  (("cn-east", nodes["cn"]), ("eu-central", nodes["eu"]), ("eu-central", nodes["eu-wrong"]))],
    }))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("gateway-world")
    redis_server = RedisServer(tmp)
    nodes = {
        "cn": NodeProcess(tmp, "--region", "cn-east"),
        "eu": NodeProcess(tmp, "--region", "eu-central"),
        "eu-wrong": NodeProcess(tmp, "--region", "eu-central", "--model-version", "mgeo_demo_tiny-other-20200101"),
    }
    gateway = None
    try:
        for node in nodes.values():
            asyncio.run(node.wait_ready())
        version, checksum = asyncio.run(_identity(nodes["cn"]))
        asyncio.run(_init_registry(redis_server.url, version, checksum))
        config = write_config(tmp / "gateway.yaml", nodes, region="eu-central")
        gateway = GatewayProcess(tmp, "--config", str(config), "--registry-url", redis_server.url)
        asyncio.run(gateway.wait_ready())
        yield World(redis_server, nodes, gateway, config, version, tmp)
    finally:
        for process in [*nodes.values(), *([gateway] if gateway else [])]:
            process.stop()
        redis_server.stop()


async def _identity(node: NodeProcess) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http:
        _, info = await node.get(http, "/info")
    return str(info["model_version"]), str(info["checksum"])


async def _init_registry(url: str, version: str, checksum: str) -> None:
    store = RedisStore(url)
    await Registry(store).initialize({"blue": ColorInfo(version, checksum)}, "blue", ["cn-east", "eu-central"],
                                     who="test")
    await store.close()


def pairs(tag: str, n: int = 2) -> list[list[str]]:
    return [[f"杭州市文一西路{i}号{tag}", f"杭州文一西路{i}号"] for i in range(n)]


async def post(http: aiohttp.ClientSession, url: str, path: str, body: object, client: str | None = None,
               **headers: str) -> tuple[int, dict[str, object], dict[str, str]]:
    h = {"X-Forwarded-For": client} if client else {}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    async with http.post(url + path, json=body, headers=h) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_clients_are_served_in_their_home_region(world: World, http: aiohttp.ClientSession) -> None:
    # Every test-database country the map names (PH's cn-north has no node: see below),
    # a country it does not name (US) and an address the database does not know.
    for client, region in ((CN, "cn-east"), (GB, "eu-central"), ("89.160.20.128", "eu-central"),
                           ("2001:218::1", "cn-east"), ("2a02:cfc0::1", "eu-central"),
                           ("216.160.83.56", "eu-central"), (UNKNOWN, "eu-central")):
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs(client)}, client)
        assert status == 200, body
        assert (headers["X-Region"], body["region"]) == (region, region)
        assert headers["X-Route"].startswith(f"home={region}; served={region};")
        assert (headers["X-Model-Version"], headers["X-Color"], body["color"]) == (world.version, "blue", "blue")
        assert headers["X-Cache"] == "miss" and len(body["results"]) == 2  # type: ignore[arg-type]


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(world: World, http: aiohttp.ClientSession) -> None:
    # The same topology, but this gateway trusts no proxy: loopback is just a client.
    gateway = GatewayProcess(world.tmp, "--config", str(world.config), "--registry-url", world.redis.url,
                             "--trusted-proxies", "", "--default-region", "cn-east")
    try:
        await gateway.wait_ready()
        status, _, headers = await post(http, gateway.url, "/v1/similarity", {"pairs": pairs("spoof")}, GB)
        assert status == 200 and headers["X-Region"] == "cn-east"  # the claimed GB address changed nothing
    finally:
        gateway.stop()


async def test_parse_and_compat_routes(world: World, http: aiohttp.ClientSession) -> None:
    status, body, headers = await post(http, world.gateway.url, "/v1/parse",
                                       {"addresses": ["浙江省杭州市余杭区五常街道文一西路969号"]}, CN)
    assert status == 200 and headers["X-Region"] == "cn-east"
    assert {"type": "prov", "text": "浙江省", "start": 0, "end": 3} in body["results"][0]["elements"]  # type: ignore[index]
    status, body, _ = await post(http, world.gateway.url, "/match",
                                 {"address1": "杭州市文一西路969号", "address2": "杭州文一西路969号"}, GB)
    assert status == 200 and 0.5 < float(body["similarity"]) <= 1  # type: ignore[arg-type]
    status, body, _ = await post(http, world.gateway.url, "/parse", {"address": "上海市黄浦区南京东路100号"}, GB)
    assert status == 200 and body["elements"]


async def test_a_repeated_batch_is_served_from_the_cache(world: World, http: aiohttp.ClientSession) -> None:
    batch = {"pairs": pairs("cache", 5)}
    status, first, headers = await post(http, world.gateway.url, "/v1/similarity", batch, CN)
    assert status == 200 and headers["X-Cache"] == "miss"
    before = await scrape(http, world.nodes["cn"].url)
    status, second, headers = await post(http, world.gateway.url, "/v1/similarity", batch, CN)
    assert status == 200 and headers["X-Cache"] == "hit" and second["results"] == first["results"]
    assert "reason=cache" in headers["X-Route"]
    after = await scrape(http, world.nodes["cn"].url)
    key = 'geogate_node_requests_total{route="/v1/similarity",status="200"}'
    assert after[key] == before[key]  # the node never saw the second call
    status, third, headers = await post(http, world.gateway.url, "/v1/similarity",
                                        {"pairs": pairs("cache", 6)}, CN)
    assert headers["X-Cache"] == "partial" and third["results"][:5] == first["results"]  # type: ignore[index]


async def test_a_node_serving_another_version_never_answers(world: World, http: aiohttp.ClientSession) -> None:
    for i in range(12):
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs(f"v{i}")}, GB)
        assert status == 200 and headers["X-Model-Version"] == world.version and body["model_version"] == world.version
    wrong = await scrape(http, world.nodes["eu-wrong"].url)
    assert wrong.get('geogate_node_requests_total{route="/v1/similarity",status="200"}', 0) == 0


async def test_a_region_without_nodes_fails_over_within_its_residency(world: World,
                                                                     http: aiohttp.ClientSession) -> None:
    # cn-north has no node, and its clients may be served in cn-* only: cn-east is fine.
    status, _, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("ph")}, PH)
    assert status == 200 and headers["X-Region"] == "cn-east"
    assert "reason=failover:no-healthy-node" in headers["X-Route"]


async def test_bad_input_gets_4xx_json_never_500(world: World, http: aiohttp.ClientSession) -> None:
    url = world.gateway.url
    cases: list[tuple[bytes, int]] = [
        (b"{not json", 400), (b'{"pairs": "x"}', 422), (b'{"pairs": []}', 422), (b"\xff\xfe", 400),
        (json.dumps({"pairs": [["a", "b"]] * 300}).encode(), 422),
        (json.dumps({"pairs": [["a" * 300, "b"]]}).encode(), 422),
    ]
    for raw, expected in cases:
        async with http.post(url + "/v1/similarity", data=raw, headers={"Content-Type": "application/json"}) as resp:
            body = await resp.json()
            assert resp.status == expected, (raw[:40], body)
            assert set(body["error"]) == {"code", "message", "request_id"}
    async with http.post(url + "/v1/similarity", data=io.BytesIO(b"x" * (2 << 20))) as resp:
        assert resp.status == 413
    async with http.post(url + "/v1/similarity", json={"pairs": pairs("d")}, headers={"X-Deadline-Ms": "soon"}) as resp:
        assert resp.status == 400
    async with http.get(url + "/nope") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_operations_endpoints(world: World, http: aiohttp.ClientSession) -> None:
    url = world.gateway.url
    async with http.get(url + "/healthz") as resp:
        assert resp.status == 200
    async with http.get(url + "/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 200 and ready["epoch"] == 1 and ready["regions_serving"] == ["cn-east", "eu-central"]
    async with http.get(url + "/openapi.json") as resp:
        spec = await resp.json()
        assert set(spec["paths"]) == {"/v1/similarity", "/v1/parse", "/match", "/parse"}
    metrics = await scrape(http, url)
    assert metrics["geogate_gateway_registry_epoch"] == 1
    assert metrics['geogate_gateway_healthy_nodes{color="blue",region="cn-east"}'] == 1
    assert any(k.startswith("geogate_gateway_requests_total{") for k in metrics)


async def test_https_end_to_end(world: World, http: aiohttp.ClientSession) -> None:
    """Client -> gateway over HTTPS, and gateway -> node over HTTPS, with generated certificates."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {}
    for name in ("gateway", "node"):
        cert = ca.issue_cert("127.0.0.1", "localhost")
        files[name] = (world.tmp / f"{name}.pem", world.tmp / f"{name}.key")
        cert.private_key_and_cert_chain_pem.write_to_path(str(files[name][0]))
        cert.private_key_pem.write_to_path(str(files[name][1]))
    ca_file = world.tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)

    node = NodeProcess(world.tmp, "--region", "eu-central", "--tls-cert", str(files["node"][0]),
                       "--tls-key", str(files["node"][1]))
    node.url = node.url.replace("http://", "https://")
    node.client_ssl = client_ssl
    config = world.tmp / "tls.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": nested(GatewayConfig, {"trusted_proxies": "127.0.0.0/8", "geoip_db": str(GEOIP), "probe_interval_s": 0.2,
                    "region": "eu-central", "upstream_ca": str(ca_file), "cache_ttl_s": 0}),
        "countries": {"GB": "eu-central"},
        "nodes": [{"region": "eu-central", "color": "blue", "url": node.url}],
    }))
    gateway = GatewayProcess(world.tmp, "--config", str(config), "--registry-url", world.redis.url,
                             "--tls-cert", str(files["gateway"][0]), "--tls-key", str(files["gateway"][1]), https=True)
    gateway.client_ssl = client_ssl
    try:
        await node.wait_ready()
        await gateway.wait_ready()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as https:
            status, _, headers = await post(https, gateway.url, "/v1/similarity", {"pairs": pairs("tls")}, GB)
            assert status == 200 and headers["X-Region"] == "eu-central" and gateway.url.startswith("https://")
            node_metrics = await scrape(https, node.url)
        assert node_metrics['geogate_node_requests_total{route="/v1/similarity",status="200"}'] >= 1
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # an untrusted certificate is refused
            await http.get(gateway.url + "/healthz")
    finally:
        gateway.stop()
        node.stop()


async def _set_region(world: World, http: aiohttp.ClientSession, region: str, state: str) -> None:
    store = RedisStore(world.redis.url)
    try:
        record = await Registry(store).set_region_state(region, state, who="test", why="drill")
    finally:
        await store.close()

    async def seen() -> bool:
        async with http.get(world.gateway.url + "/readyz") as resp:
            return int((await resp.json())["epoch"]) >= record.epoch

    await wait_until(seen, 10, f"the gateway to see epoch {record.epoch}")


async def test_a_drained_region_fails_over_and_residency_is_never_breached(world: World,
                                                                           http: aiohttp.ClientSession) -> None:
    await _set_region(world, http, "cn-east", "drained")
    try:
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("drain")}, CN)
        assert status == 200 and headers["X-Region"] == "eu-central"
        assert "home=cn-east; served=eu-central" in headers["X-Route"] and "reason=failover:drained" in headers["X-Route"]
        # cn-north's clients may only be served in cn-*: with cn-east drained nothing is left.
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("res")}, PH)
        assert status == 503, body
        error = body["error"]
        assert error["code"] == "unavailable" and "residency" in error["message"]  # type: ignore[index,operator]
        metrics = await scrape(http, world.gateway.url)
        assert metrics['geogate_gateway_failovers_total{from_region="cn-east",reason="failover:drained",'
                       'to_region="eu-central"}'] >= 1
    finally:
        await _set_region(world, http, "cn-east", "active")
    status, _, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("back")}, CN)
    assert status == 200 and headers["X-Region"] == "cn-east"


async def test_sigterm_lets_in_flight_calls_finish(world: World, http: aiohttp.ClientSession) -> None:
    slow = NodeProcess(world.tmp, "--region", "eu-central", "--fault-delay-ms", "1500")
    config = world.tmp / "slow.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": nested(GatewayConfig, {"region": "eu-central", "probe_interval_s": 0.2, "deep_probe_interval_s": 0, "cache_ttl_s": 0}),
        "nodes": [{"region": "eu-central", "color": "blue", "url": slow.url}],
    }))
    gateway = GatewayProcess(world.tmp, "--config", str(config), "--registry-url", world.redis.url)
    try:
        await slow.wait_ready()
        await gateway.wait_ready()
        call = asyncio.create_task(post(http, gateway.url, "/v1/similarity", {"pairs": pairs("drain-me")}))

        async def in_flight() -> bool:
            metrics = await scrape(http, slow.url)
            return metrics.get('geogate_node_in_flight_items{task="similarity"}', 0) > 0

        await wait_until(in_flight, 10, "the call to reach the node")
        gateway.signal(signal.SIGTERM)
        status, body, _ = await call
        assert status == 200 and body["model_version"] == world.version
        assert gateway.wait_exit(30) == 0
    finally:
        gateway.stop()
        slow.stop()



async def test_canary_header_and_percent_route_to_the_preview_color(world: World,
                                                                    http: aiohttp.ClientSession) -> None:
    green_version = "mgeo_demo_tiny-green-20261124"
    green = NodeProcess(world.tmp, "--region", "eu-central", "--color", "green", "--model-version", green_version,
                        "--registry-url", world.redis.url)
    store = RedisStore(world.redis.url)
    try:
        await green.wait_ready()
        _, checksum = await _identity(green)
        record = await Registry(store).register_color("green", green_version, checksum, who="test", why="preview")

        async def green_serves() -> bool:  # the gateway found the node by heartbeat and probed it
            status, _, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("c0")}, GB,
                                            X_MGeo_Version="canary")
            return status == 200 and headers["X-Color"] == "green"

        await wait_until(green_serves, 20, "the green node to take canary calls")
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("c1")}, GB)
        assert headers["X-Color"] == "blue" and headers["X-Model-Version"] == world.version  # no header, 0%: blue
        status, body, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("c1")}, GB,
                                           X_MGeo_Version="canary")
        assert (status, headers["X-Color"], body["model_version"]) == (200, "green", green_version)

        record = await Registry(store).set_canary(50, who="test", why="half")
        await wait_until(lambda: _epoch_at_least(http, world, record.epoch), 10, "the canary change")
        colors = []
        for i in range(30):
            body_pairs = {"pairs": pairs(f"split{i}")}
            _, _, first = await post(http, world.gateway.url, "/v1/similarity", body_pairs, GB)
            _, _, again = await post(http, world.gateway.url, "/v1/similarity", body_pairs, GB)
            assert first["X-Color"] == again["X-Color"]  # sticky: the same call lands on the same color
            colors.append(first["X-Color"])
        assert 5 <= colors.count("green") <= 25, colors
        await Registry(store).set_canary(0, who="test", why="done")
    finally:
        await store.close()
        green.stop()


async def _epoch_at_least(http: aiohttp.ClientSession, world: World, epoch: int) -> bool:
    async with http.get(world.gateway.url + "/readyz") as resp:
        return int((await resp.json())["epoch"]) >= epoch


async def test_several_workers_share_one_port(world: World, http: aiohttp.ClientSession) -> None:
    gateway = GatewayProcess(world.tmp, "--config", str(world.config), "--registry-url", world.redis.url,
                             "--workers", "2")
    pids: set[int] = set()
    try:
        await gateway.wait_ready()

        async def both_answer() -> bool:
            # a new session each time: a new connection, which the kernel may give either worker
            async with aiohttp.ClientSession() as fresh, fresh.get(gateway.url + "/readyz") as resp:
                if resp.status == 200:
                    pids.add(int((await resp.json())["pid"]))
            return len(pids) == 2

        await wait_until(both_answer, 30, "both workers to answer")
        status, _, headers = await post(http, gateway.url, "/v1/similarity", {"pairs": pairs("workers")}, GB)
        assert status == 200 and headers["X-Region"] == "eu-central"
        gateway.signal(signal.SIGTERM)
        assert gateway.wait_exit(40) == 0
        for pid in pids:
            await wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 20, f"worker {pid} to exit")
    finally:
        gateway.stop()


async def test_json_logs_carry_the_request_through_gateway_and_node(world: World, http: aiohttp.ClientSession) -> None:
    """One JSON line per call at the gateway and at the node, with the same request id."""
    node = NodeProcess(world.tmp, "--region", "cn-east", "--log-format", "json")
    config = write_config(world.tmp / "gateway-json.yaml", {**world.nodes, "cn": node}, region="eu-central")
    gateway = GatewayProcess(world.tmp, "--config", str(config), "--registry-url", world.redis.url,
                             "--log-format", "json")
    try:
        await node.wait_ready()
        await gateway.wait_ready()

        async def cn_serving() -> bool:
            _, ready = await gateway.get(http, "/readyz")
            return "cn-east" in ready["regions_serving"]  # type: ignore[operator]

        await wait_until(cn_serving, 20, "the gateway to take the new cn-east node")
        status, _, headers = await post(http, gateway.url, "/v1/similarity", {"pairs": pairs("logs")}, CN,
                                        X_Request_ID="trace-me-42")
        assert status == 200 and headers["X-Request-ID"] == "trace-me-42"

        def line(process: NodeProcess, logger: str) -> dict[str, object] | None:
            for text in process.log().splitlines():
                if text.startswith("{"):
                    entry = json.loads(text)  # every line is one JSON object
                    if entry["logger"] == logger and entry.get("request_id") == "trace-me-42":
                        return entry
            return None

        await wait_until(lambda: line(gateway, "geogate.gateway.access") and line(node, "geogate.node.access"), 10,
                         "both access lines")
        at_gateway = line(gateway, "geogate.gateway.access")
        at_node = line(node, "geogate.node.access")
        assert at_gateway is not None and at_node is not None
        for key in ("ts", "level", "logger", "request_id", "route", "status", "ms"):
            assert key in at_gateway and key in at_node, key
        assert (at_gateway["route"], at_gateway["status"], at_gateway["served"]) == ("/v1/similarity", 200, "cn-east")
        assert (at_gateway["color"], at_gateway["node"], at_gateway["region"]) == ("blue", node.url, "eu-central")
        assert (at_node["region"], at_node["color"], at_node["route"]) == ("cn-east", "blue", "/v1/similarity")
        assert "ms" in at_node and float(at_node["ms"]) > 0  # type: ignore[arg-type]
        # the text format carries the same fields for people
        await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("text-log")}, GB,
                   X_Request_ID="text-me-43")
        await wait_until(lambda: "request_id=text-me-43 route=/v1/similarity status=200" in world.gateway.log(), 10,
                         "the text access line")
    finally:
        gateway.stop()
        node.stop()


async def test_a_node_registered_from_outside_the_networks_is_ignored(world: World,
                                                                      http: aiohttp.ClientSession) -> None:
    store = RedisStore(world.redis.url)
    beats = Heartbeats(store, ttl_s=30)
    forged = NodeHeartbeat("eu-central", "blue", "http://169.254.169.254:80", world.version, "x", "2026-01-01T00:00:00Z")
    try:
        await beats.beat(forged)
        await wait_until(lambda: "ignoring the heartbeat of node 'http://169.254.169.254:80'" in world.gateway.log(), 10,
                         "the gateway to refuse the forged node")
        for i in range(5):  # and it never takes calls
            status, _, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs(f"f{i}")}, GB)
            assert status == 200 and headers["X-Region"] == "eu-central"
    finally:
        await beats.remove(forged)
        await store.close()


async def test_a_tiny_client_deadline_is_a_504_and_never_ejects_the_node(world: World,
                                                                          http: aiohttp.ClientSession) -> None:
    """Found by fuzzing: a caller's X-Deadline-Ms of 1 used to count as the node's failure,
    and three in a row ejected it, taking the region down for everyone."""
    for i in range(6):
        status, body, _ = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs(f"deadline-{i}")}, GB,
                                     X_Deadline_Ms="1")
        assert status in (200, 504), body  # 200 only if a node was that fast
        if status == 504:
            assert body["error"]["code"] == "deadline_exceeded"  # type: ignore[index]
    status, _, headers = await post(http, world.gateway.url, "/v1/similarity", {"pairs": pairs("after-deadlines")}, GB)
    assert status == 200 and headers["X-Region"] == "eu-central" and "reason=home" in headers["X-Route"]


async def test_a_body_nested_too_deeply_is_a_400(world: World, http: aiohttp.ClientSession) -> None:
    body = b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b', "pairs": [["a", "b"]]}'
    for url in (world.gateway.url, world.nodes["eu"].url):
        async with http.post(url + "/v1/similarity", data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]["code"] == "invalid_json"


async def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes as they are (aiohttp's client would refuse to); returns status, headers, body."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        head, _, body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_broken_http_and_unknown_expect_get_the_json_error_shape(world: World) -> None:
    """Found by fuzzing: aiohttp's parser answered these itself, text/plain, and logged a
    traceback (with the offending header bytes) at ERROR."""
    secret = b"Bearer s3cret-" + b"7" * 9000
    broken = {
        "control character": b"GET /v1/parse HTTP/1.1\r\nHost: a\r\nX-Request-ID: a\x00b\r\n\r\n",
        "header line over 8 KiB": b"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: " + secret + b"\r\n\r\n",
        "too many headers": b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
                            + b"\r\n",
        "unknown method": b"FOO /v1/parse HTTP/1.1\r\nHost: a\r\n\r\n",
        "asterisk form": b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    }
    for url in (world.gateway.url, world.nodes["eu"].url):
        for what, request in broken.items():
            status, headers, body = await _raw(url, request)
            assert status == 400 and headers["content-type"].startswith("application/json"), (what, status, body)
            error = json.loads(body)["error"]
            assert error["code"] == "malformed_http" and error["request_id"] == headers["x-request-id"], (what, error)
            assert b"s3cret" not in body
        for path in ("/v1/parse", "/no-such-route"):
            status, headers, body = await _raw(url, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n"
                                               b"Expect: close\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            assert status == 417 and json.loads(body)["error"]["code"] == "expectation_failed", (path, body)
            assert headers["x-request-id"]
    # 100-continue still works, through the whole gateway: the interim answer, then the final one.
    body = b'{"addresses": ["a"]}'
    reader, writer = await asyncio.open_connection(*world.gateway.url.split("://", 1)[1].rsplit(":", 1))
    writer.write(b"POST /v1/parse HTTP/1.1\r\nHost: a\r\nConnection: close\r\nExpect: 100-continue\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer[:300]
    for process in (world.gateway, world.nodes["eu"]):
        log = process.log()
        assert "s3cret" not in log and "Error handling request" not in log, log[-3000:]

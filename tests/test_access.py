"""Client access (issue 9): API keys managed through the admin API, mutual TLS, per-client
limits shared by two gateways through one real Redis, fail-open with a local cap, and
per-client metrics.

The world: Redis, one demo node in eu-central and one in us-east, and a gateway in each
region, both with anonymous access off. Clients are created through /admin/v1/clients
at one gateway and used at both (the registry's change feed carries them).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from admin_world import GEOIP, TOKENS, auth
from helpers import REPO, GatewayProcess, NodeProcess, RedisServer, scrape, seed_registry_from, wait_until

from geogate.gateway.config import GatewayConfig
from geogate.gateway.control.auth import hash_token
from geogate.shared.clients import hash_key
from geogate.shared.config import nested

GB, US = "81.2.69.160", "50.114.0.1"  # MaxMind's test database: GB (eu-central) and US (us-east)
NO_ANONYMOUS = {"GEOGATE_ALLOW_ANONYMOUS": "false"}


@dataclass
class World:
    redis: RedisServer
    eu: GatewayProcess
    us: GatewayProcess
    config: Path
    tmp: Path
    hold: Path  # while missing, the eu-central node holds every forward pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("access-world")
    redis = RedisServer(tmp)
    hold = tmp / "eu.go"
    hold.touch()
    nodes = [NodeProcess(tmp, "--region", "eu-central", "--registry-url", redis.url, "--cpu-threads", "1",
                         "--fault-hold-inference-file", str(hold)),
             NodeProcess(tmp, "--region", "us-east", "--registry-url", redis.url, "--cpu-threads", "1")]
    gateways: list[GatewayProcess] = []
    try:
        asyncio.run(seed_registry_from(redis.url, nodes, ["eu-central", "us-east"]))
        tokens = tmp / "tokens.yaml"
        tokens.write_text(yaml.safe_dump({"tokens": [{"name": r, "role": r, "sha256": hash_token(t)}
                                                     for r, t in TOKENS.items()]}))
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "gateway": nested(GatewayConfig, {"trusted_proxies": "127.0.0.0/8", "geoip_db": str(GEOIP), "probe_interval_s": 0.2,
                        "deep_probe_interval_s": 0, "admin_tokens_file": str(tokens), "registry_url": redis.url,
                        "cache_hit_cost": 0.1}),
            "regions": {"eu-central": {"failover": ["us-east"]}, "us-east": {"failover": ["eu-central"]}},
            "countries": {"GB": "eu-central", "US": "us-east"},
            "nodes": [{"region": "eu-central", "color": "blue", "url": nodes[0].url},
                      {"region": "us-east", "color": "blue", "url": nodes[1].url}],
        }))
        gateways = [GatewayProcess(tmp, "--config", str(config), "--region", region, env=NO_ANONYMOUS)
                    for region in ("eu-central", "us-east")]
        for gw in gateways:
            asyncio.run(gw.wait_ready())
        yield World(redis, gateways[0], gateways[1], config, tmp, hold)
    finally:
        for process in [*gateways, *nodes]:
            process.stop()
        redis.stop()


_n = 0


def fresh(n: int = 1) -> list[list[str]]:
    """Pairs no call has sent before (cache misses)."""
    global _n
    _n += 1
    return [[f"杭州市文一西路{i}号-{_n}-{time.monotonic_ns()}", f"杭州文一西路{i}号"] for i in range(n)]


async def call(http: aiohttp.ClientSession, gateway: GatewayProcess, key: str | None, *, path: str = "/v1/similarity",
               body: Any = None, client: str = GB, header: str = "bearer") -> tuple[int, dict[str, Any], Any]:
    headers = {"X-Forwarded-For": client}
    if key is not None:
        headers.update({"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key})
    if body is None:
        body = {"pairs": fresh()} if path == "/v1/similarity" else {"addresses": [f"杭州市文一西路{time.monotonic_ns()}号"]}
    async with http.post(gateway.url + path, json=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def admin(http: aiohttp.ClientSession, gateway: GatewayProcess, path: str, body: dict[str, Any] | None = None,
                role: str = "admin") -> tuple[int, Any]:
    method = http.post if body is not None else http.get
    async with method(gateway.url + "/admin/v1/clients" + path, json=body, headers=auth(role)) as resp:
        return resp.status, await resp.json()


async def new_client(http: aiohttp.ClientSession, world: World, name: str, **spec: Any) -> str:
    status, body = await admin(http, world.eu, "", {"name": name, "reason": "test", **spec})
    assert status == 200, body
    assert body["client"]["name"] == name and not body["gateways_not_confirmed"], body
    return str(body["api_key"])


async def test_no_key_unknown_key_and_anonymous_off(world: World, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, world.eu, None)
    assert status == 401 and body["error"]["code"] == "unauthorized" and headers["WWW-Authenticate"]
    status, _, body = await call(http, world.eu, "gg_00000000_not-a-key")
    assert status == 401 and "unknown" in body["error"]["message"]
    async with http.post(world.eu.url + "/v1/parse", json={"addresses": ["a"]},
                         headers={"Authorization": "Basic dXNlcjpwYXNz"}) as resp:
        assert resp.status == 401
    metrics = await scrape(http, world.eu.url)
    assert metrics['geogate_gateway_client_requests_total{client="unidentified",route="/v1/similarity",status="4xx"}'] >= 2


async def test_keys_are_managed_by_admins_only_and_work_at_every_gateway(world: World,
                                                                         http: aiohttp.ClientSession) -> None:
    for role in ("viewer", "operator"):
        status, _ = await admin(http, world.eu, "", role=role)
        assert status == 403
    key = await new_client(http, world, "orders-eu")
    assert key.startswith("gg_")
    for gateway in (world.eu, world.us):  # created at eu, used at both: the change feed carried it
        for header in ("bearer", "x-api-key"):
            status, _, body = await call(http, gateway, key, header=header)
            assert status == 200, body
    status, listing = await admin(http, world.us, "")
    mine = next(c for c in listing["clients"] if c["name"] == "orders-eu")
    assert mine["source"] == "registry" and mine["keys"][0]["valid"] and "sha256" not in json.dumps(mine)
    assert key not in json.dumps(listing)
    status, body = await admin(http, world.eu, "", {"name": "orders-eu", "reason": "again"})
    assert status == 409


async def test_rotation_with_overlap_then_revocation(world: World, http: aiohttp.ClientSession) -> None:
    old = await new_client(http, world, "orders-rotating")
    status, body = await admin(http, world.eu, "/orders-rotating/keys", {"reason": "yearly", "overlap_s": 3600})
    assert status == 200 and body["old_keys_valid_until"], body
    new = body["api_key"]
    for key in (old, new):  # both valid during the overlap
        assert (await call(http, world.us, key))[0] == 200
    status, body = await admin(http, world.eu, "/orders-rotating/keys", {"reason": "leaked", "overlap_s": 0})
    newest = body["api_key"]
    for key in (old, new):
        status, _, answer = await call(http, world.us, key)
        assert status == 401, answer
    assert (await call(http, world.us, newest))[0] == 200
    key_id = newest.split("_")[1]
    status, body = await admin(http, world.eu, f"/orders-rotating/keys/{key_id}/revoke", {"reason": "gone"})
    assert status == 200
    assert (await call(http, world.eu, newest))[0] == 401
    # a whole client revoked
    other = await new_client(http, world, "orders-revoked")
    assert (await call(http, world.eu, other))[0] == 200
    status, _ = await admin(http, world.eu, "/orders-revoked/revoke", {"reason": "contract ended"})
    assert status == 200
    assert (await call(http, world.eu, other))[0] == 401


async def test_a_key_limited_to_parse_or_to_a_region(world: World, http: aiohttp.ClientSession) -> None:
    parse_only = await new_client(http, world, "parser", tasks=["parse"])
    status, _, body = await call(http, world.eu, parse_only)
    assert status == 403 and body["error"]["code"] == "forbidden" and "similarity" in body["error"]["message"]
    assert (await call(http, world.eu, parse_only, path="/v1/parse"))[0] == 200
    async with http.post(world.eu.url + "/match", json={"address1": "a", "address2": "b"},
                         headers={"X-API-Key": parse_only}) as resp:
        assert resp.status == 403  # the compat route is the same task
    us_only = await new_client(http, world, "us-resident", regions=["us-east"])
    status, _, body = await call(http, world.eu, us_only, client=US)
    assert status == 403 and "us-east" in body["error"]["message"]
    # at its own region's gateway it is served there, even for a client GeoIP puts in GB,
    # and never fails over out of its regions
    status, headers, body = await call(http, world.us, us_only, client=GB)
    assert status == 200 and headers["X-Region"] == "us-east", body


async def test_the_rate_limit_holds_across_two_gateways(world: World, http: aiohttp.ClientSession) -> None:
    rate, burst = 4.0, 6.0
    key = await new_client(http, world, "noisy", limits={"rps": rate, "burst": burst})
    answers: list[tuple[int, dict[str, Any]]] = []
    started = time.monotonic()
    for i in range(60):  # as fast as they go, alternating gateways
        status, headers, _ = await call(http, (world.eu, world.us)[i % 2], key)
        answers.append((status, headers))
    elapsed = time.monotonic() - started
    allowed = sum(1 for status, _ in answers if status == 200)
    assert {status for status, _ in answers} <= {200, 429}
    assert burst <= allowed <= rate * elapsed + burst, (allowed, elapsed)
    refused = [headers for status, headers in answers if status == 429]
    assert refused, "no call was refused"
    sample = refused[-1]
    assert int(sample["Retry-After"]) >= 1 and sample["X-RateLimit-Scope"] == "requests"
    assert sample["X-RateLimit-Limit"] == "6" and float(sample["X-RateLimit-Remaining"]) < 1
    assert int(sample["X-RateLimit-Reset"]) >= 1
    ok = next(headers for status, headers in answers if status == 200)
    assert ok["X-RateLimit-Limit"] == "6" and "X-RateLimit-Remaining" in ok
    metrics = await scrape(http, world.eu.url)
    assert metrics['geogate_gateway_client_throttled_total{client="noisy",scope="requests"}'] >= 1
    assert metrics['geogate_gateway_client_requests_total{client="noisy",route="/v1/similarity",status="429"}'] >= 1


async def test_item_rate_counts_cache_hits_at_a_discount(world: World, http: aiohttp.ClientSession) -> None:
    key = await new_client(http, world, "batcher", limits={"items_per_s": 0.001, "items_burst": 12})
    batch = {"pairs": fresh(10)}
    status, headers, _ = await call(http, world.eu, key, body=batch)  # 10 misses: 10 of 12
    assert status == 200 and headers["X-Cache"] == "miss"
    for _ in range(2):  # the same batch again: 10 hits at 0.1 each
        status, headers, _ = await call(http, world.eu, key, body=batch)
        assert status == 200 and headers["X-Cache"] == "hit"
    status, headers, body = await call(http, world.eu, key, body=batch)  # 12 used: even hits are refused now
    assert status == 429 and headers["X-RateLimit-Scope"] == "items", body
    metrics = await scrape(http, world.eu.url)
    assert metrics['geogate_gateway_client_items_total{cache="hit",client="batcher"}'] == 20
    assert metrics['geogate_gateway_client_items_total{cache="miss",client="batcher"}'] == 10


async def test_daily_quota(world: World, http: aiohttp.ClientSession) -> None:
    key = await new_client(http, world, "quota-client", limits={"daily_quota": 3})
    for gateway in (world.eu, world.us, world.eu):
        assert (await call(http, gateway, key))[0] == 200
    status, headers, body = await call(http, world.us, key)
    assert status == 429 and headers["X-RateLimit-Scope"] == "daily-quota", body
    assert 0 < int(headers["X-RateLimit-Reset"]) <= 86_400 and int(headers["Retry-After"]) >= 1


async def test_concurrency_cap_per_client(world: World, http: aiohttp.ClientSession) -> None:
    key = await new_client(http, world, "slow-batch", limits={"max_concurrent": 1})
    world.hold.unlink()  # the eu-central node now holds every forward pass
    try:
        held = asyncio.create_task(call(http, world.eu, key))

        async def at_the_node() -> bool:
            async with http.get(world.eu.url + "/admin/v1/status", headers=auth("viewer")) as resp:
                nodes = (await resp.json())["regions"]["eu-central"]["colors"]["blue"]
            return sum(n["outstanding"] for n in nodes) >= 1

        await wait_until(at_the_node, 10, "the first call to be held at the node")
        status, headers, body = await call(http, world.eu, key)
        assert status == 429 and "in flight" in body["error"]["message"] and headers["Retry-After"] == "1", body
        other = await new_client(http, world, "other-client")
        world.hold.touch()  # other clients are not held back by it: release and call
        assert (await held)[0] == 200
        assert (await call(http, world.eu, other))[0] == 200
        assert (await call(http, world.eu, key))[0] == 200  # its slot was given back
    finally:
        world.hold.touch()


async def test_limits_fail_open_with_a_local_cap_while_redis_is_down(world: World,
                                                                     http: aiohttp.ClientSession) -> None:
    key = await new_client(http, world, "while-down", limits={"rps": 0.01, "burst": 3})
    assert (await call(http, world.eu, key))[0] == 200  # 1 of the shared 3
    world.redis.kill()
    try:
        statuses = [(await call(http, world.eu, key))[0] for _ in range(6)]
        # the local cap is the client's own limit (limit_fallback_factor 1): 3 at once, then 429
        assert statuses.count(200) == 3 and statuses[3:] == [429] * 3, statuses
        metrics = await scrape(http, world.eu.url)
        assert metrics["geogate_gateway_limiter_local"] == 1
        assert metrics["geogate_gateway_limiter_fallback_total"] >= 1
    finally:
        world.redis.restart()

        async def registry_back() -> bool:
            async with http.get(world.eu.url + "/admin/v1/status", headers=auth("viewer")) as resp:
                return resp.status == 200 and (await resp.json())["store"] == "ok"

        await wait_until(registry_back, 30, "the gateway to reach the restarted Redis")


async def test_mutual_tls_identifies_a_client_by_its_certificate(world: World, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "gw.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    clients = tmp_path / "clients.yaml"
    file_key = "gg_feedbeef_from-the-config-file"
    clients.write_text(yaml.safe_dump({"clients": {
        "orders-mtls": {"cert_names": ["orders-mtls.example"], "tasks": ["similarity"]},
        "payments-mesh": {"cert_names": [SPIFFE_ID]},
        "from-file": {"keys_sha256": [hash_key(file_key)]},
    }}))
    gateway = GatewayProcess(tmp_path, "--config", str(world.config), "--region", "eu-central",
                             "--tls-cert", str(tmp_path / "gw.pem"), "--tls-key", str(tmp_path / "gw.key"),
                             "--client-ca", str(tmp_path / "clients-ca.pem"), "--clients-file", str(clients),
                             env=NO_ANONYMOUS, https=True)

    def context(issuer: Any | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if issuer is not None:
            issuer.issue_cert("orders-mtls.example").configure_cert(ctx)
        return ctx

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context(None))) as anonymous:
            async def ready() -> bool:
                try:
                    async with anonymous.get(gateway.url + "/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, 30, "the mTLS gateway")
            status, _, _ = await call(anonymous, gateway, None)
            assert status == 401  # no certificate, no key
            status, _, body = await call(anonymous, gateway, file_key)
            assert status == 200, body  # a key from the clients file
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context(ca))) as mtls:
            status, _, body = await call(mtls, gateway, None)
            assert status == 200, body
            status, _, body = await call(mtls, gateway, None, path="/v1/parse")
            assert status == 403  # the certificate's client may call similarity only
        mesh = context(None)  # a service mesh's workload certificate: a SPIFFE id as its only name
        mesh.load_cert_chain(*_uri_san_cert(ca, SPIFFE_ID, tmp_path))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=mesh)) as workload:
            status, _, body = await call(workload, gateway, None)
            assert status == 200, body
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context(stranger))) as forged:
            with pytest.raises(aiohttp.ClientError):  # signed by another CA: the handshake fails
                await call(forged, gateway, None)
        log = gateway.log()
        assert "client=orders-mtls" in log and "via=cert:orders-mtls.example" in log
        assert "client=payments-mesh" in log and f"via=cert:{SPIFFE_ID}" in log
        assert file_key not in log
    finally:
        gateway.stop()


SPIFFE_ID = "spiffe://geogate.test/ns/payments/sa/checkout"


def _uri_san_cert(ca: Any, uri: str, tmp: Path) -> tuple[str, str]:
    """A client certificate from ``ca`` whose only name is ``uri`` (its CN names no client):
    trustme issues DNS, IP and e-mail names only, so this one is made with cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    signer = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload-1234")]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]
    cert_path, key_path = tmp / "workload.pem", tmp / "workload.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_admin_status_lists_the_busiest_clients_per_region(world: World, http: aiohttp.ClientSession) -> None:
    key = await new_client(http, world, "status-listed")
    for _ in range(5):
        assert (await call(http, world.us, key))[0] == 200

    async def listed() -> bool:
        async with http.get(world.eu.url + "/admin/v1/status", headers=auth("viewer")) as resp:
            top = (await resp.json())["top_clients"]
        return any(row["client"] == "status-listed" and row["calls"] >= 5 for row in top.get("us-east", []))

    await wait_until(listed, 15, "us-east's gateway heartbeat to list the client")


def test_admin_cli_manages_clients(world: World) -> None:
    token = world.tmp / "ada.token"
    token.write_text(TOKENS["admin"])
    common = ["--url", world.eu.url, "--token-file", str(token)]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "geogate.shared.cli", "admin", *args, *common], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)

    done = cli("client-add", "cli-made", "--tasks", "parse", "--rps", "50", "--reason", "from the CLI")
    assert done.returncode == 0, done.stderr
    key = re.search(r"API key \(shown once; store it now\): (gg_\S+)", done.stdout)
    assert key and "tasks parse" in done.stdout and "rps 50" in done.stdout, done.stdout
    done = cli("client-set", "cli-made", "--regions", "eu-central", "--reason", "pin")
    assert done.returncode == 0 and "regions eu-central" in done.stdout, done.stderr
    done = cli("client-rotate", "cli-made", "--overlap-s", "0", "--reason", "rotate")
    assert done.returncode == 0 and "revoked" in done.stdout and "API key (shown once" in done.stdout, done.stdout
    done = cli("clients")
    assert done.returncode == 0 and "anonymous access: off" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("cli-made"))
    assert "registry" in row and "eu-central" in row and key.group(1) not in done.stdout
    done = cli("client-revoke", "cli-made", "--reason", "done")
    assert done.returncode == 0 and "client cli-made: revoked" in done.stdout
    done = cli("client-set", "nobody", "--rps", "1", "--reason", "x")
    assert done.returncode == 1 and "404" in done.stderr

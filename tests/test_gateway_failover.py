"""Losing a whole region under steady load: no client call fails, traffic moves to the next
region of the failover order, and comes back when the region's nodes return.

Nodes find the gateway through heartbeats (no static node list), so a replacement node
on a new port is picked up like in a real deployment.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yaml
from helpers import GatewayProcess, NodeProcess, RedisServer, wait_until

from geogate.gateway.config import GatewayConfig
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.shared.config import nested
from geogate.shared.registry import ColorInfo, Registry
from geogate.shared.store import RedisStore

CN = "175.16.199.0"


async def test_sigkill_of_every_node_of_a_region_loses_no_call(tmp_path: Path, redis_server: RedisServer,
                                                               start_node: Callable[..., NodeProcess]) -> None:
    node_args = ["--registry-url", redis_server.url, "--heartbeat-ttl-s", "2"]
    cn = start_node(*node_args, "--region", "cn-east")
    eu = start_node(*node_args, "--region", "eu-central")
    await asyncio.gather(cn.wait_ready(), eu.wait_ready())
    async with aiohttp.ClientSession() as http:
        _, info = await cn.get(http, "/info")
    store = RedisStore(redis_server.url)
    await Registry(store).initialize({"blue": ColorInfo(str(info["model_version"]), str(info["checksum"]))}, "blue",
                                     ["cn-east", "eu-central"], who="test")
    await store.close()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": nested(GatewayConfig, {"region": "cn-east", "trusted_proxies": "127.0.0.0/8", "probe_interval_s": 0.2,
                    "geoip_db": str(TEST_GEOIP_DB),
                    "cache_ttl_s": 0}),
        "regions": {"cn-east": {"failover": ["eu-central"]}, "eu-central": {"failover": ["cn-east"]}},
        "countries": {"CN": "cn-east"},
    }))
    gateway = GatewayProcess(tmp_path, "--config", str(config), "--registry-url", redis_server.url)
    try:
        await gateway.wait_ready()
        log: list[tuple[float, float, int, str]] = []  # (sent, answered, status, region)
        stop = asyncio.Event()

        async def client(worker: int, http: aiohttp.ClientSession) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                pair = [f"杭州市文一西路{worker * 100000 + i}号", "杭州文一西路1号"]
                sent = time.monotonic()
                async with http.post(gateway.url + "/v1/similarity", json={"pairs": [pair]},
                                     headers={"X-Forwarded-For": CN}) as resp:
                    await resp.read()
                    log.append((sent, time.monotonic(), resp.status, resp.headers.get("X-Region", "")))

        def served(region: str, since: float) -> int:
            return sum(1 for sent, _, status, r in log if sent >= since and status == 200 and r == region)

        async with aiohttp.ClientSession() as http:
            workers = [asyncio.create_task(client(w, http)) for w in range(4)]
            try:
                await wait_until(lambda: served("cn-east", 0) >= 20, 30, "traffic in the home region")
                killed_at = time.monotonic()
                cn.proc.send_signal(signal.SIGKILL)
                await wait_until(lambda: served("eu-central", killed_at) >= 40, 30, "traffic in eu-central")
                replacement = NodeProcess(tmp_path, *node_args, "--region", "cn-east")
                try:
                    await replacement.wait_ready()
                    back_from = time.monotonic()
                    await wait_until(lambda: served("cn-east", back_from) >= 20, 30, "traffic back in cn-east")
                finally:
                    stop.set()
                    await asyncio.gather(*workers)
                    replacement.stop()
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)

        failed = [entry for entry in log if entry[2] != 200]
        assert not failed, f"{len(failed)} of {len(log)} calls failed: {failed[:5]}"
        after_kill = [entry for entry in log if entry[0] >= killed_at]
        # The very first call sent after the kill was answered (retried in eu-central).
        assert after_kill and after_kill[0][2] == 200
        first_moved = min(answered for sent, answered, _, region in after_kill if region == "eu-central")
        print(f"\n{len(log)} calls, 0 failed; first answer from eu-central {1000 * (first_moved - killed_at):.0f} ms "
              f"after the SIGKILL")
    finally:
        gateway.stop()

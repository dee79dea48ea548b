"""Test harness: real node processes on free loopback ports, real HTTP, polled deadlines."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
STARTUP_S = 120.0  # model import and load on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` (sync or async) until it holds; tests never sleep a fixed time to wait."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


class NodeProcess:
    """A ``geogate node`` subprocess; its log goes to a file the test can read."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, command: str = "node") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{command}-{self.port}.log"
        self.cmd = [sys.executable, "-m", "geogate.shared.cli", command, "--port", str(self.port), "--log-format", "text", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.start()

    def start(self) -> None:
        """(Re)start the process on the same port, appending to the same log."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, object]]:
        async with session.get(self.url + path) as resp:
            return resp.status, await resp.json()

    client_ssl: object = None  # an ssl.SSLContext for an HTTPS service

    async def wait_status(self, path: str, status: int, timeout: float = STARTUP_S) -> None:
        connector = aiohttp.TCPConnector(ssl=self.client_ssl or True)  # type: ignore[arg-type]
        async with aiohttp.ClientSession(connector=connector) as session:

            async def check() -> bool:
                if self.proc.poll() is not None:
                    raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    async with session.get(self.url + path) as resp:
                        return resp.status == status
                except aiohttp.ClientError:
                    return False

            await wait_until(check, timeout, f"{path} -> {status} on {self.url}")

    async def wait_ready(self) -> None:
        await self.wait_status("/health/ready", 200)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class GatewayProcess(NodeProcess):
    """A ``geogate gateway`` subprocess (same harness as a node)."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, https: bool = False) -> None:
        # Test gateways serve anonymous calls unless a test says otherwise (tests/test_access.py).
        super().__init__(tmp, *args, env={"GEOGATE_ALLOW_ANONYMOUS": "true", **(env or {})}, command="gateway")
        if https:
            self.url = self.url.replace("http://", "https://")

    async def wait_ready(self) -> None:
        await self.wait_status("/readyz", 200)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, nothing persisted; a test can
    kill it (SIGKILL, like a crash) and restart it on the same port, empty."""

    def __init__(self, tmp: Path, *, replica_of: RedisServer | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.replica_of = replica_of
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        if self.replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start:\n{self.log()[-2000:]}")
            time.sleep(0.01)

    def answers(self) -> bool:
        return _answers_ping(self.port)

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisSentinel:
    """A private Redis Sentinel (``redis-server --sentinel``) watching ``primary`` as
    service ``name``."""

    def __init__(self, tmp: Path, primary: RedisServer, name: str = "geogate") -> None:
        self.port = free_port()
        self.name = name
        conf = tmp / f"sentinel-{self.port}.conf"  # Sentinel rewrites its config: a file of its own
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {tmp}\nlogfile {tmp / f'sentinel-{self.port}.log'}\n"
            f"sentinel monitor {name} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n"
        )
        self.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis sentinel on {self.port} did not start")
            time.sleep(0.01)
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """``/metrics`` as {'name{label="v",...}': value} for samples, for easy assertions."""
    async with session.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def build_tiny_bundle(out: Path, *, tasks: tuple[str, ...] = ("similarity", "parse"),
                      labels: list[str] | None = None, version: str | None = "tiny_random-test-20261123") -> Path:
    """A real transformers model bundle with random weights, small enough to build in a
    second: for tests of the loading code that do not depend on what the model learned."""
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertTokenizerFast

    from geogate.node.backends.tags import tag_set

    chars = sorted(set("浙江省杭州市余杭区五常街道文一西路号阿里巴巴西溪园区楼层上海黄浦南京东北京海淀中关村大街"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *"0123456789", *(f"##{d}" for d in range(10))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"))
    size = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 128}
    names = labels or ["not_match", "partial_match", "exact_match"]
    tags = tag_set(["prov", "city", "district", "road", "roadno"])
    models = {
        "similarity": BertForSequenceClassification(BertConfig(
            **size, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})),
        "parse": BertForTokenClassification(BertConfig(
            **size, num_labels=len(tags), id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})),
    }
    for task in tasks:
        models[task].save_pretrained(out / task)
        tokenizer.save_pretrained(out / task)
    if version:
        (out / "geogate.json").write_text(json.dumps({"model_version": version}), encoding="utf-8")
    return out


async def seed_registry_from(store_url: str, nodes: list[NodeProcess], regions: list[str]) -> dict[str, tuple[str, str]]:
    """The registry seeded (blue active) from what ``nodes`` report, as a deployment does it;
    returns each color's (version, checksum)."""
    from geogate.shared.bootstrap import read_identities, seed_registry
    from geogate.shared.registry import Registry
    from geogate.shared.store import open_store

    identities = await read_identities([n.url for n in nodes], wait_s=STARTUP_S)
    store = open_store(store_url)  # redis:// or redis+sentinel://
    try:
        await seed_registry(Registry(store), identities, active="blue", regions=regions, who="test")
    finally:
        await store.close()
    return {i.color: (i.model_version, i.checksum) for i in identities}

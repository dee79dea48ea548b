"""One local deployment, from nothing to serving and back: store, nodes, registry,
gateways; then it watches them (restarting what crashes) until told to stop.

Order matters: nodes first (they take longest: the model loads), the registry seeded
from what they report, gateways last, so no gateway ever starts without a registry.
The run directory holds what scripts need: ``endpoints.json``, ``status.json``,
``admin-token``, ``gateway.yaml``, ``logs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml

from geogate.gateway.control.auth import hash_token
from geogate.gateway.dataplane.geoip_build import default_output
from geogate.gateway.launcher.plan import GEOGATE, TEST_GEOIP_DB, LaunchPlan, NodePlan, sample_client_ip
from geogate.gateway.launcher.progress import Row, Status
from geogate.gateway.launcher.supervisor import Child, Supervisor
from geogate.gateway.launcher.tls import LocalTLS, make_local_tls
from geogate.shared.bootstrap import BootstrapError, identity_from_ready, seed_registry
from geogate.shared.errors import StoreUnavailable
from geogate.shared.registry import Registry, RegistryRecord
from geogate.shared.rundir import ADMIN_TOKEN, ENDPOINTS, default_run_dir
from geogate.shared.store import Store, Stores, open_store

__all__ = ["Deployment", "LaunchError", "UpOptions"]

log = logging.getLogger("geogate.launcher")

SAMPLE_PAIR = '{"pairs": [["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]]}'


class LaunchError(RuntimeError):
    """The deployment cannot start (said once, clearly, and everything started is stopped)."""


@dataclass(frozen=True)
class UpOptions:
    run_dir: Path
    tls: bool = False
    store: str | None = None  # None: a private redis-server if on PATH, else embedded; "embedded"; a URL
    wait_s: float = 600.0  # for nodes to load and gateways to answer
    namespace: str = "geogate"


def choose_store(requested: str | None, which: Callable[[str], str | None] = shutil.which) -> str:
    """``"private"`` (start a redis-server), ``"embedded"``, or the URL asked for."""
    if requested:
        return requested
    return "private" if which("redis-server") else "embedded"


class Deployment:
    def __init__(self, plan: LaunchPlan, options: UpOptions, *, on_status: Callable[[Status], None]) -> None:
        self.plan = plan
        self.opt = options
        self.run_dir = options.run_dir
        self.scheme = "https" if options.tls else "http"
        self.status = Status(pid=os.getpid())
        self._on_status = on_status
        self.rows: dict[str, Row] = {}
        self.supervisor = Supervisor(on_change=self._child_changed)
        self.stop_event = asyncio.Event()
        self.store_url: str | None = None  # None: embedded
        self.store_label = ""
        self.tls: LocalTLS | None = None
        self.geoip_db: str | None = None
        self.record: RegistryRecord | None = None
        self._embedded_store: Store | None = None
        self._embedded_gateways: list[asyncio.Task[int]] = []
        self._embedded_stop = asyncio.Event()
        self._client_ssl: ssl.SSLContext | None = None
        self._ready_bodies: dict[str, bytes] = {}  # node name -> its last /health/ready body
        for n in plan.nodes:
            self.rows[n.name] = Row(n.name, "node", n.region, n.color, self._url(n.port))
        for g in plan.gateways:
            self.rows[f"gateway-{g.region}"] = Row(f"gateway-{g.region}", "gateway", g.region, "", self._url(g.port))

    def _url(self, port: int) -> str:
        return f"{self.scheme}://{self.plan.host}:{port}"

    # -- status --------------------------------------------------------------------------

    def _publish(self) -> None:
        self.status.rows = list(self.rows.values())
        _write_atomic(self.run_dir / "status.json", msgspec.json.encode(self.status))
        self._on_status(self.status)

    def _set_row(self, name: str, state: str, detail: str = "", pid: int | None = None) -> None:
        row = self.rows[name]
        if pid is not None:
            row.pid = pid
        if (row.state, row.detail) != (state, detail):
            row.state, row.detail, row.since = state, detail, time.time()
            self._publish()

    def _set_phase(self, phase: str, message: str = "") -> None:
        self.status.phase, self.status.message = phase, message
        self._publish()

    def _child_changed(self, child: Child) -> None:
        if child.name not in self.rows:
            return
        row = self.rows[child.name]
        row.pid, row.restarts = child.pid, child.restarts
        if child.state == "running":
            self._set_row(child.name, "starting", f"restart {child.restarts}" if child.restarts else "")
        elif child.state == "restarting":
            self._set_row(child.name, "restarting", f"exit {child.last_exit}")
        else:
            self._set_row(child.name, child.state, f"exit {child.last_exit}" if child.last_exit is not None else "")
        if self.status.phase == "ready":
            self._write_endpoints()

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, serve until ``stop_event``, stop everything. 0, or 1 when
        the deployment could not start (``status.message`` says why)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        _write_atomic(self.run_dir / "launcher.pid", str(os.getpid()).encode())
        self._publish()
        code = 0
        startup = asyncio.create_task(self._start(), name="startup")
        stopped = asyncio.create_task(self.stop_event.wait(), name="stop")
        try:
            await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if startup.done() and startup.exception() is None:
                self._set_phase("ready")
                watcher = asyncio.create_task(self._keep_polling(), name="poll")
                await stopped
                watcher.cancel()
            elif startup.done():
                exc = startup.exception()
                code = 1
                self._set_phase("failed", str(exc))
                if not isinstance(exc, LaunchError):
                    log.error("launcher failed", exc_info=exc)
        finally:
            startup.cancel()
            stopped.cancel()
            await asyncio.gather(startup, stopped, return_exceptions=True)
            self._set_phase("stopping", self.status.message)
            await self._stop_all()
            self._set_phase("stopped" if code == 0 else "failed", self.status.message)
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / "launcher.pid").unlink()
        return code

    async def _start(self) -> None:
        self._write_admin_token()
        if self.opt.tls:
            try:
                self.tls = make_local_tls(self.run_dir / "tls")
            except RuntimeError as exc:
                raise LaunchError(str(exc)) from exc
            self._client_ssl = ssl.create_default_context(cafile=str(self.tls.ca))
        self.geoip_db = _default_geoip_db()
        await self._start_store()
        self._write_node_file()
        for node in self.plan.nodes:
            await self.supervisor.start(Child(node.name, "node", self._node_argv(node), self._log(node.name),
                                              env=_child_env()))
        await self._wait_ready("node", "/health/ready")
        await self._seed_registry()
        self._write_gateway_file()
        if self.store_url is None:
            await self._start_embedded_gateways()
        else:
            for gw in self.plan.gateways:
                name = f"gateway-{gw.region}"
                argv = [*GEOGATE, "gateway", "--config", str(self.run_dir / "gateway.yaml"), "--region", gw.region,
                        "--host", self.plan.host, "--port", str(gw.port)]
                await self.supervisor.start(Child(name, "gateway", argv, self._log(name), env=_child_env()))
        await self._wait_ready("gateway", "/readyz")
        self._write_endpoints()
        self.status.summary = self.summary()

    # -- store and registry ---------------------------------------------------------------

    async def _start_store(self) -> None:
        choice = choose_store(self.opt.store)
        if choice == "embedded":
            self.store_label = "embedded (in the launcher process; no redis-server on PATH)"
            self._embedded_store = open_store(None)
            return
        if choice != "private":
            self.store_url, self.store_label = choice, choice
            return
        port = _free_port(self.plan.host)
        data = self.run_dir / "redis"
        data.mkdir(exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", self.plan.host,
                "--save", "", "--appendonly", "no", "--dir", str(data)]
        await self.supervisor.start(Child("redis", "store", argv, self._log("redis")))
        self.store_url = f"redis://{self.plan.host}:{port}/0"
        self.store_label = f"{self.store_url} (a private redis-server, nothing persisted)"
        store = open_store(self.store_url)
        try:
            for _ in range(200):
                with contextlib.suppress(StoreUnavailable):
                    await store.ping()
                    return
                await asyncio.sleep(0.05)
        finally:
            await store.close()
        raise LaunchError(f"redis-server on port {port} did not answer; see {self._log('redis')}")

    async def _seed_registry(self) -> None:
        identities = [identity_from_ready(self.rows[n.name].url, self._ready_bodies[n.name]) for n in self.plan.nodes]
        store = self._embedded_store or open_store(self.store_url)
        try:
            self.record, created = await seed_registry(
                Registry(store, namespace=self.opt.namespace), identities, active=self.plan.active,
                regions=list(self.plan.regions), who="geogate-up")
        except BootstrapError as exc:
            raise LaunchError(str(exc)) from exc
        finally:
            if store is not self._embedded_store:
                await store.close()
        if not created:
            log.warning("the store already holds a registry (epoch %d): left as it is", self.record.epoch)

    # -- processes ------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def _node_argv(self, node: NodePlan) -> list[str]:
        argv = [*GEOGATE, "node", "--config", str(self.run_dir / "node.yaml"), "--model", node.model,
                "--region", node.region, "--color", node.color, "--host", self.plan.host, "--port", str(node.port)]
        if self.store_url:
            argv += ["--registry-url", self.store_url, "--advertise-url", self._url(node.port)]
        if self.tls:
            argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        return argv

    def _write_node_file(self) -> None:
        """The topology file's ``launcher.node`` settings, for every node to read as its own."""
        text = "# written by geogate up: the settings every node of this run reads\n"
        data = {"node": self.plan.node_settings}
        _write_atomic(self.run_dir / "node.yaml", (text + yaml.safe_dump(data, sort_keys=False)).encode())

    def _write_gateway_file(self) -> None:
        extra: dict[str, Any] = {"registry_url": self.store_url, "namespace": self.opt.namespace,
                                 "admin_tokens_file": str(self.run_dir / "admin-tokens.yaml"),
                                 "drill_kill": True}  # nodes run here and the launcher restarts them
        if self.geoip_db:
            extra["geoip_db"] = self.geoip_db
        if self.tls:
            extra.update(tls_cert=str(self.tls.cert), tls_key=str(self.tls.key), upstream_ca=str(self.tls.ca))
        data = self.plan.gateway_file(self.scheme, {k: v for k, v in extra.items() if v is not None})
        text = "# written by geogate up: the config every gateway of this run reads\n"
        _write_atomic(self.run_dir / "gateway.yaml", (text + yaml.safe_dump(data, sort_keys=False)).encode())

    async def _start_embedded_gateways(self) -> None:
        """Without Redis the store lives in this process, so the gateways must too."""
        from geogate.gateway.config import GatewayConfig
        from geogate.gateway.routing.topology import load_topology
        from geogate.gateway.server import serve
        from geogate.shared.config import build_config

        path = self.run_dir / "gateway.yaml"
        topology = load_topology(path)
        assert self._embedded_store is not None
        stores = Stores(self._embedded_store, self._embedded_store)  # serve() leaves them open
        for gw in self.plan.gateways:
            config = build_config(GatewayConfig, section="gateway", file=path,
                                  overrides={"region": gw.region, "port": gw.port, "host": self.plan.host})
            task = asyncio.create_task(serve(config, topology, stores=stores, stop=self._embedded_stop),
                                       name=f"gateway-{gw.region}")
            self._embedded_gateways.append(task)
            self._set_row(f"gateway-{gw.region}", "starting", "in the launcher process", pid=os.getpid())

    async def _stop_all(self) -> None:
        self._embedded_stop.set()
        if self._embedded_gateways:
            await asyncio.gather(*self._embedded_gateways, return_exceptions=True)
            for gw in self.plan.gateways:
                self._set_row(f"gateway-{gw.region}", "stopped")
        await self.supervisor.stop()
        if self._embedded_store is not None:
            await self._embedded_store.close()

    # -- readiness -------------------------------------------------------------------------

    async def _poll(self, session: aiohttp.ClientSession, kind: str, path: str) -> None:
        async def one(row: Row) -> None:
            if row.state in ("restarting", "exited", "stopped"):
                return
            try:
                async with session.get(row.url + path) as resp:
                    body = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                if row.state == "ready":
                    self._set_row(row.name, "unready", "not answering")
                return
            if resp.status == 200:
                if kind == "node":
                    self._ready_bodies[row.name] = body
                    detail = json.loads(body).get("model_version", "")
                else:
                    detail = "serving"
                self._set_row(row.name, "ready", detail)
            elif kind == "node":
                with contextlib.suppress(ValueError):
                    state = str(json.loads(body).get("status", "loading"))
                    self._set_row(row.name, "unready" if row.state == "ready" else state,
                                  str(json.loads(body).get("error") or ""))

        await asyncio.gather(*(one(r) for r in self.rows.values() if r.kind == kind))

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                     connector=aiohttp.TCPConnector(ssl=self._client_ssl or True))

    async def _wait_ready(self, kind: str, path: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opt.wait_s
        async with self._session() as session:
            while True:
                await self._poll(session, kind, path)
                rows = [r for r in self.rows.values() if r.kind == kind]
                if all(r.state == "ready" for r in rows):
                    return
                failed = [r for r in rows if r.state in ("exited", "failed")]
                if kind == "gateway" and self._embedded_gateways:
                    failed += [self.rows[t.get_name()] for t in self._embedded_gateways if t.done()]
                if failed:
                    raise LaunchError(f"{failed[0].name} failed to start; see {self._log(failed[0].name)}")
                if loop.time() > deadline:
                    late = [r.name for r in rows if r.state != "ready"]
                    raise LaunchError(f"not ready after {self.opt.wait_s:.0f} s: {', '.join(late)} "
                                      f"(logs in {self.run_dir / 'logs'})")
                await asyncio.sleep(0.25)

    async def _keep_polling(self) -> None:
        async with self._session() as session:
            while True:
                await asyncio.sleep(1.0)
                await self._poll(session, "node", "/health/ready")
                await self._poll(session, "gateway", "/readyz")

    # -- what the run leaves for scripts and people -------------------------------------------

    def _write_admin_token(self) -> None:
        """A fresh admin token per run: the token in ``admin-token`` (mode 0600) for the
        operator, only its hash in ``admin-tokens.yaml`` for the gateways."""
        path = self.run_dir / ADMIN_TOKEN
        path.unlink(missing_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        book = {"tokens": [{"name": "local-admin", "role": "admin", "sha256": hash_token(token)}]}
        _write_atomic(self.run_dir / "admin-tokens.yaml", yaml.safe_dump(book).encode())

    def endpoints(self) -> dict[str, Any]:
        return {
            "gateways": {g.region: self._url(g.port) for g in self.plan.gateways},
            "nodes": [{"region": n.region, "color": n.color, "url": self._url(n.port), "pid": self.rows[n.name].pid,
                       "name": n.name, "model": n.model} for n in self.plan.nodes],
            "store": self.store_url or "embedded",
            "admin_token_file": str(self.run_dir / ADMIN_TOKEN),
            "launcher_pid": os.getpid(),
            "tls_ca": str(self.tls.ca) if self.tls else None,
        }

    def _write_endpoints(self) -> None:
        _write_atomic(self.run_dir / ENDPOINTS, json.dumps(self.endpoints(), indent=2).encode())

    def summary(self) -> str:
        record = self.record
        assert record is not None
        serving_demo = [json.loads(body).get("demo") for body in self._ready_bodies.values()]
        demo = " (DEMO models)" if serving_demo and all(serving_demo) else ""
        lines = [(f"geogate is up: {len(self.plan.regions)} regions, {len(self.plan.nodes)} nodes{demo}, "
                  f"store {self.store_label}"), ""]
        lines.append(f"{'REGION':14s} {'GATEWAY':28s} NODES")
        for gw in self.plan.gateways:
            nodes = [self.rows[n.name] for n in self.plan.nodes if n.region == gw.region]
            text = "  ".join(f"{r.color} :{r.url.rsplit(':', 1)[1]} {r.state}" for r in nodes)
            lines.append(f"{gw.region:14s} {self._url(gw.port):28s} {text}")
        lines.append("")
        for color, info in sorted(record.colors.items()):
            role = "ACTIVE " if color == record.active_color else "preview"
            lines.append(f"{role} {color:6s} {info.model_version}  sha256 {info.sha256[:16]}")
        lines.append(f"registry epoch {record.epoch}; GeoIP database: {self.geoip_db or 'none'}")
        token = (self.run_dir / ADMIN_TOKEN).read_text().strip()
        first = self._url(self.plan.gateways[0].port)
        here = "" if self.run_dir == default_run_dir() else f" --run-dir {self.run_dir}"
        access = self.plan.gateway_settings.get("access") or {}
        anonymous = ("ON (a demo: calls without an API key are served as client 'anonymous')"
                     if access.get("allow_anonymous") else "off (every call needs an API key)")
        lines += [f"dashboard: {first}/dashboard  (sign in with the admin token)",
                  f"admin token: {token}  (in {self.run_dir / ADMIN_TOKEN})",
                  f"operate it: geogate admin status{here}  (or switch, rollback, canary, drill: geogate admin --help)",
                  f"anonymous access: {anonymous}; an API key: geogate admin client-add NAME --reason '...'{here}",
                  f"run dir: {self.run_dir} ({ENDPOINTS}, gateway.yaml, logs/)", "",
                  "Try it; X-Forwarded-For names the client a call stands for (loopback is a trusted proxy here):"]
        ca = f" --cacert {self.tls.ca}" if self.tls else ""
        countries = self.plan.topology.get("countries", {})
        for gw in self.plan.gateways:
            ip = sample_client_ip(gw.region, countries, self.geoip_db)
            xff = f" -H 'X-Forwarded-For: {ip}'" if ip else ""
            lines.append(f"  curl -si{ca} {self._url(gw.port)}/v1/similarity{xff} "
                         f"-H 'Content-Type: application/json' -d '{SAMPLE_PAIR}'")
        return "\n".join(lines)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _default_geoip_db() -> str | None:
    """`geogate geoip build`'s database when there is one, else MaxMind's test database."""
    for path in (default_output(), TEST_GEOIP_DB):
        if path.is_file():
            return str(path)
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

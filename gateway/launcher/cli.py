"""``geogate up`` and ``geogate down``, registered as entry points of the ``geogate``
command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from geogate.gateway.launcher.plan import DEFAULT_TOPOLOGY, GEOGATE, LaunchPlan, build_plan
from geogate.gateway.launcher.progress import LiveTable, Status
from geogate.shared.rundir import ENDPOINTS, default_run_dir, read_endpoints

if TYPE_CHECKING:
    from geogate.gateway.launcher.deployment import UpOptions

__all__ = ["add_down_parser", "add_up_parser"]

LAUNCHER_MARK = GEOGATE[-1]  # in the command line of the launcher and of every process it starts

UP_EXAMPLES = """\
examples:
  geogate up                                   four regions, blue and green nodes; Ctrl-C stops it
  geogate up --regions eu-central,us-east --tls
  geogate up --detach && geogate admin status  in the background; stop it with geogate down
"""


def add_up_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run a whole multi-region deployment on this machine (the demo)",
        description="Start a store, blue and green nodes in every region and one gateway per region, seed the "
        "registry from what the nodes serve, and show how to call it. Ctrl-C stops everything.",
        epilog=UP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--config", type=Path, default=DEFAULT_TOPOLOGY, metavar="FILE",
                    help="topology file (default: the shipped four-region demo, %(default)s)")
    up.add_argument("--regions", help="comma-separated regions to run (default: all in the file)")
    up.add_argument("--nodes-per-color", type=int, metavar="N",
                    help="nodes of each color per region (default: the file's, 1)")
    up.add_argument("--port-base", type=int, default=8080, metavar="PORT",
                    help="gateways on this port and up, nodes from +100 (0: any free ports; default %(default)s)")
    up.add_argument("--tls", action=argparse.BooleanOptionalAction, default=False,
                    help="HTTPS everywhere, with a private CA made for this run (default: plain HTTP)")
    up.add_argument("--store", help="'embedded' or a Redis URL (default: a private redis-server when one is on "
                    "PATH, else embedded)")
    up.add_argument("--run-dir", type=Path, default=default_run_dir(), metavar="DIR",
                    help="where endpoints.json, the admin token and logs go; geogate admin and geogate down find "
                    "the deployment there (default: %(default)s)")
    up.add_argument("--detach", action=argparse.BooleanOptionalAction, default=False,
                    help="return once everything is ready; stop it with geogate down (default: stay in the "
                    "foreground)")
    up.add_argument("--wait-s", type=float, default=600.0, metavar="S",
                    help="how long models may take to load, in seconds (default: %(default)s)")
    up.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)  # the detached launcher itself
    up.set_defaults(run=_up)


def add_down_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    down = sub.add_parser("down", help="stop a deployment started with geogate up --detach",
                          description="Drain the gateways, stop the nodes and the store of a deployment that "
                          "geogate up --detach started, and check that its ports are free.",
                          epilog="example:\n  geogate down\n  geogate down --run-dir /tmp/demo --timeout-s 120",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    down.add_argument("--run-dir", type=Path, default=default_run_dir(), metavar="DIR",
                      help="its run directory (default: %(default)s)")
    down.add_argument("--timeout-s", type=float, default=60.0, metavar="S",
                      help="how long it may take to drain and stop, in seconds (default: %(default)s)")
    down.set_defaults(run=_down)


def _up(args: argparse.Namespace) -> int:
    from geogate.shared.config import ConfigError

    run_dir: Path = args.run_dir.resolve()
    pid = running_launcher(run_dir)
    if pid is not None:
        print(f"geogate up: a deployment is already running from {run_dir} (pid {pid}); "
              f"stop it with: geogate down --run-dir {run_dir}", file=sys.stderr)
        return 1
    regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
    try:
        plan = build_plan(args.config, regions=regions, nodes_per_color=args.nodes_per_color,
                          port_base=args.port_base)
    except ConfigError as exc:
        print(f"geogate up: {exc}", file=sys.stderr)
        return 2
    if args.detach:
        return _detach(args, run_dir)
    from geogate.gateway.launcher.deployment import UpOptions
    from geogate.shared.runtime import run as run_service

    options = UpOptions(run_dir=run_dir, tls=args.tls, store=args.store, wait_s=args.wait_s)
    stop_hint = f"geogate down --run-dir {run_dir}" if args.supervise else "Ctrl-C"
    return run_service(_foreground(plan, options, stop_hint))


async def _foreground(plan: LaunchPlan, options: UpOptions, stop_hint: str) -> int:
    from geogate.gateway.launcher.deployment import Deployment
    from geogate.shared.logs import setup_logging

    run_dir = options.run_dir
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_file = (run_dir / "logs" / "launcher.log").open("a", encoding="utf-8")
    setup_logging("info", json_lines=True, stream=log_file, service="launcher")
    table = LiveTable()
    shown: dict[str, str] = {"phase": ""}

    def render(status: Status) -> None:
        if status.phase == "starting":
            table.show(status.rows, table=True)
        elif status.phase == "ready" and shown["phase"] != "ready":
            table.show(status.rows, table=True)
            table.say(f"\n{status.summary}\n\n{stop_hint} stops everything. Changes from now on:")
        elif status.phase == "ready":
            table.show(status.rows, table=False)
        elif status.phase == "failed" and shown["phase"] != "failed":
            table.say(f"geogate up: {status.message}")
        elif status.phase == "stopping" and shown["phase"] != "stopping":
            table.say("stopping: gateways drain, then nodes, then the store ...")
        elif status.phase == "stopped" and shown["phase"] != "stopped":
            table.say("stopped.")
        shown["phase"] = status.phase

    deployment = Deployment(plan, options, on_status=render)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, deployment.stop_event.set)
    try:
        return await deployment.run()
    finally:
        logging.shutdown()
        log_file.close()


def _detach(args: argparse.Namespace, run_dir: Path) -> int:
    """Start the launcher in a session of its own and show its progress from the status
    file it keeps, until it is ready (0) or has failed (1)."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    for stale in ("status.json", ENDPOINTS):
        (run_dir / stale).unlink(missing_ok=True)
    argv = [*GEOGATE, "up", "--supervise", "--run-dir", str(run_dir),
            "--config", str(args.config), "--port-base", str(args.port_base), "--wait-s", str(args.wait_s)]
    for flag, value in (("--regions", args.regions), ("--nodes-per-color", args.nodes_per_color),
                        ("--store", args.store)):
        if value is not None:
            argv += [flag, str(value)]
    if args.tls:
        argv.append("--tls")
    out_path = run_dir / "logs" / "launcher.out"
    with out_path.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    table = LiveTable()
    deadline = time.monotonic() + args.wait_s + 60
    while True:
        status = _read_status(run_dir)
        if status is not None and status.pid == proc.pid:
            table.show(status.rows, table=True)
            if status.phase == "ready":
                table.say(f"\n{status.summary}\n\nrunning in the background (pid {proc.pid}); "
                          f"stop it with: geogate down --run-dir {run_dir}")
                return 0
            if status.phase in ("failed", "stopping", "stopped"):
                table.say(f"geogate up: {status.message or status.phase}")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(120)
                return 1
        if proc.poll() is not None:
            tail = out_path.read_text(errors="replace")[-2000:]
            print(f"geogate up: the launcher exited with {proc.returncode}:\n{tail}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"geogate up: not ready after {args.wait_s:.0f} s; stopping it", file=sys.stderr)
            proc.terminate()
            return 1
        time.sleep(0.25)


def _read_status(run_dir: Path) -> Status | None:
    try:
        return msgspec.json.decode((run_dir / "status.json").read_bytes(), type=Status)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def running_launcher(run_dir: Path) -> int | None:
    """The pid of the launcher running from ``run_dir``, if one is."""
    try:
        pid = int((run_dir / "launcher.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, LAUNCHER_MARK) else None


def _alive(pid: int | None, marker: str) -> bool:
    """``pid`` runs and is ours (its command line names ``marker``: pids are reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and marker.encode() in cmdline


def _down(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir.resolve()
    endpoints = read_endpoints(run_dir) or {}
    pid = running_launcher(run_dir)
    children = [n.get("pid") for n in endpoints.get("nodes", [])]
    if pid is not None:
        os.kill(pid, signal.SIGTERM)  # it drains gateways, stops nodes, then the store
        if not _wait(lambda: not _alive(pid, LAUNCHER_MARK), args.timeout_s):
            print(f"the launcher (pid {pid}) did not stop in {args.timeout_s:.0f} s: killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)  # its children get SIGTERM from the kernel (PR_SET_PDEATHSIG)
    else:
        print(f"no launcher is running from {run_dir}")
    leftovers = [p for p in children if _alive(p, LAUNCHER_MARK)]
    if leftovers and not _wait(lambda: not any(_alive(p, LAUNCHER_MARK) for p in leftovers), 20):
        for p in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    urls = list(endpoints.get("gateways", {}).values()) + [n["url"] for n in endpoints.get("nodes", [])]
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]
    if not _wait(lambda: not any(_listening(p) for p in ports), 10):
        busy = [p for p in ports if _listening(p)]
        print(f"geogate down: ports still in use: {busy}", file=sys.stderr)
        return 1
    if pid is not None:
        print(f"stopped the deployment from {run_dir}: {len(ports)} ports free")
    return 0


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True

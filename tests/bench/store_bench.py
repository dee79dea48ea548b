"""Benchmark: registry propagation through Redis pub/sub, and MGET vs single GETs.

Run on demand (not in CI; it needs ``redis-server`` on the PATH):

    .venv/bin/python tests/bench/store_bench.py                          # 200 changes, 500 rounds
    .venv/bin/python tests/bench/store_bench.py --changes 50 --rounds 100

One private ``redis-server`` on a free loopback port serves both parts:

1. Registry propagation. ``--watchers`` processes (this script again, with a hidden
   flag) each run a ``RegistryWatcher`` on their own ``RedisStore`` and print the wall
   clock (``time.time_ns()``) at which their ``on_change`` callback saw each epoch. This
   process makes ``--changes`` canary changes one after another, noting the wall clock
   just before each ``set_canary``, and waits (at most ``--change-timeout`` seconds) until
   every watcher reported the new epoch before making the next. Latency is seen minus
   written, over all (change, watcher) pairs: one machine, so one clock. The target is a
   p99 under 20 ms. The watchers poll only every 60 s, so what they see comes from the
   channel.
2. Cache lookups. ``--keys`` keys with ~60-byte values are written, then ``--rounds``
   rounds each time one ``mget`` of all keys and the same keys as sequential ``get``s
   (A B A B ..., so drift hits both alike); the script prints the mean time per lookup of
   all keys both ways and their ratio.

``--json FILE`` also writes the figures to FILE (for ``tests/bench/run_all.py``).

Everything stays on 127.0.0.1; watchers exit when their stdin closes, on a ``stop`` line
or after ``--max-seconds``, and are killed if they do not exit in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

from helpers import RedisServer

from geogate.shared.registry import ColorInfo, Registry, RegistryRecord, RegistryWatcher
from geogate.shared.store import RedisStore

TARGET_P99_MS = 20.0
READY_TIMEOUT_S = 30.0  # a watcher process imports, connects and subscribes in this time
STOP_TIMEOUT_S = 5.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


# -- the watcher process ------------------------------------------------------------------

async def _watch(url: str, max_seconds: float) -> None:
    """Print ``ready`` once subscribed, then ``<epoch> <time_ns>`` for every record seen."""
    store = RedisStore(url)
    watcher = RegistryWatcher(Registry(store), poll_interval_s=60)

    def seen(record: RegistryRecord) -> None:
        now = time.time_ns()
        sys.stdout.write(f"{record.epoch} {now}\n")
        sys.stdout.flush()

    watcher.on_change(seen)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await watcher.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not watcher.connected:
            if time.monotonic() > deadline:
                raise SystemExit("watcher: not subscribed in time")
            await asyncio.sleep(0.01)
        print(f"ready {os.getpid()}", flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_seconds):
                while True:
                    line = await stdin.readline()
                    if not line or line.strip() == b"stop":
                        break
    finally:
        await watcher.close()
        await store.close()


# -- part 1: registry propagation ---------------------------------------------------------

class WatcherProc:
    """One watcher subprocess and the epochs it reported, read from its stdout as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, wake: asyncio.Event) -> None:
        self.proc = proc
        self.seen: dict[int, int] = {}  # epoch -> time_ns when its callback saw it
        self.ready = asyncio.Event()
        self.eof = False
        self._wake = wake
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            parts = line.decode().split()
            if parts and parts[0] == "ready":
                self.ready.set()
            elif len(parts) == 2:
                self.seen.setdefault(int(parts[0]), int(parts[1]))
            self._wake.set()
        self.eof = True
        self._wake.set()

    async def stop(self) -> None:
        """Ask it to stop (``stop`` line, then EOF); kill it if it does not exit in time."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reader, STOP_TIMEOUT_S)
        if not self.reader.done():
            self.reader.cancel()


async def propagation(url: str, args: argparse.Namespace) -> dict[str, float]:
    store = RedisStore(url)
    registry = Registry(store)
    await registry.initialize({"blue": ColorInfo("v1", "a" * 64), "green": ColorInfo("v2", "b" * 64)}, "blue",
                              ["cn-east"], who="bench")
    wake = asyncio.Event()
    max_seconds = args.changes * args.change_timeout + 120  # a bound even if this process dies
    watchers: list[WatcherProc] = []
    latencies_ms: list[float] = []
    write_ms: list[float] = []
    missed = 0
    try:
        for _ in range(args.watchers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--watch", url, "--max-seconds", str(max_seconds),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            watchers.append(WatcherProc(proc, wake))
        async with asyncio.timeout(READY_TIMEOUT_S + 10):
            await asyncio.gather(*(w.ready.wait() for w in watchers))
        print(f"{len(watchers)} watchers subscribed; making {args.changes} changes", flush=True)

        for i in range(args.changes):
            t0 = time.time_ns()
            record = await registry.set_canary(float(i % 101), who="bench", why=f"store_bench change {i}")
            write_ms.append((time.time_ns() - t0) / 1e6)
            epoch = record.epoch
            try:
                async with asyncio.timeout(args.change_timeout):
                    while not all(epoch in w.seen for w in watchers):
                        if any(w.eof for w in watchers):
                            raise RuntimeError("a watcher process exited early")
                        wake.clear()
                        if all(epoch in w.seen for w in watchers):
                            break
                        await wake.wait()
            except TimeoutError:
                missed += 1
                print(f"change {i} (epoch {epoch}): not seen by every watcher within {args.change_timeout:.0f}s",
                      flush=True)
                if missed >= 3:
                    print("three changes missed: stopping the propagation part early", flush=True)
                    break
            latencies_ms += [(w.seen[epoch] - t0) / 1e6 for w in watchers if epoch in w.seen]
            if (i + 1) % 50 == 0:
                print(f"  {i + 1} changes, p99 so far {percentile(latencies_ms, 99):.2f} ms", flush=True)
    finally:
        await asyncio.gather(*(w.stop() for w in watchers), return_exceptions=True)
        await store.close()
    return {
        "changes": len(write_ms), "samples": len(latencies_ms), "missed": missed,
        "p50": percentile(latencies_ms, 50), "p99": percentile(latencies_ms, 99),
        "max": max(latencies_ms, default=float("nan")),
        "write_p50": percentile(write_ms, 50), "write_p99": percentile(write_ms, 99),
    }


# -- part 2: cache lookups ----------------------------------------------------------------

async def lookups(url: str, args: argparse.Namespace) -> dict[str, float]:
    store = RedisStore(url)
    keys = [f"bench:cache:{i:04d}" for i in range(args.keys)]
    values = [f"{k}|".encode().ljust(60, b"x") for k in keys]  # 60-byte values
    try:
        await store.set_many(list(zip(keys, values)))
        if await store.mget(keys) != values or [await store.get(k) for k in keys] != values:
            raise RuntimeError("read back values differ from those written")

        async def one_mget() -> int:
            t = time.perf_counter_ns()
            await store.mget(keys)
            return time.perf_counter_ns() - t

        async def singles() -> int:
            t = time.perf_counter_ns()
            for key in keys:
                await store.get(key)
            return time.perf_counter_ns() - t

        for _ in range(min(20, args.rounds)):  # warm-up, not timed
            await one_mget()
            await singles()
        mget_ns: list[int] = []
        get_ns: list[int] = []
        for _ in range(args.rounds):
            mget_ns.append(await one_mget())
            get_ns.append(await singles())
    finally:
        await store.close()
    mget_mean = sum(mget_ns) / len(mget_ns) / 1e3
    get_mean = sum(get_ns) / len(get_ns) / 1e3
    return {
        "mget_us": mget_mean, "get_us": get_mean, "ratio": get_mean / mget_mean,
        "mget_p50_us": percentile([v / 1e3 for v in mget_ns], 50),
        "get_p50_us": percentile([v / 1e3 for v in get_ns], 50),
    }


# -- the run ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200, help="registry changes to time")
    parser.add_argument("--watchers", type=int, default=3, help="watcher processes")
    parser.add_argument("--change-timeout", type=float, default=5.0, help="seconds to wait for one change")
    parser.add_argument("--rounds", type=int, default=500, help="MGET/GET rounds (alternated against drift)")
    parser.add_argument("--keys", type=int, default=64, help="keys per lookup")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--watch", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        asyncio.run(_watch(args.watch, args.max_seconds))
        return
    if min(args.changes, args.watchers, args.rounds, args.keys) < 1:
        parser.error("--changes, --watchers, --rounds and --keys must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        try:
            print(f"redis-server on {redis.url}", flush=True)
            prop = asyncio.run(propagation(redis.url, args))
            look = asyncio.run(lookups(redis.url, args))
        finally:
            redis.stop()

    verdict = "met" if prop["p99"] < TARGET_P99_MS and not prop["missed"] else "NOT met"
    n = args.keys
    print()
    print(f"registry propagation: {prop['changes']} changes x {args.watchers} watchers = {prop['samples']} samples"
          f" ({prop['missed']} changes not seen by all within {args.change_timeout:.0f}s)")
    print(f"  write -> watcher callback   p50 {prop['p50']:7.2f} ms   p99 {prop['p99']:7.2f} ms   "
          f"max {prop['max']:7.2f} ms")
    print(f"  set_canary call alone       p50 {prop['write_p50']:7.2f} ms   p99 {prop['write_p99']:7.2f} ms")
    print(f"  target p99 < {TARGET_P99_MS:.0f} ms: {verdict}")
    print(f"cache lookups of {n} keys, {args.rounds} rounds each way:")
    print(f"  one MGET          mean {look['mget_us']:9.1f} us   p50 {look['mget_p50_us']:9.1f} us")
    print(f"  {n} sequential GETs mean {look['get_us']:9.1f} us   p50 {look['get_p50_us']:9.1f} us")
    print(f"  ratio (GETs / MGET): {look['ratio']:.1f}x")
    if args.json:
        settings = {k: getattr(args, k) for k in ("changes", "watchers", "change_timeout", "rounds", "keys")}
        # strict JSON: a percentile of no samples (nan) becomes null
        prop_json = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in prop.items()}
        doc = {"benchmark": "store_bench", "settings": settings, "target_p99_ms": TARGET_P99_MS,
               "target_met": verdict == "met", "propagation": prop_json, "lookups": look}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

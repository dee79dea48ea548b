"""Steady client load in a process of its own, for the chaos scenarios.

    python tests/chaos/load.py --gateway URL [--gateway URL] --client IP --stop-file F --seconds MAX --out FILE

Each call goes to the next gateway in turn; when a gateway cannot be reached at all the
caller tries the next one at once, as a load balancer in front of the gateways would
(an HTTP answer, even a 503, is never retried: it is what the client sees). Every call
is written to ``--out`` as one JSON line: sent and done (monotonic seconds), status,
X-Model-Version, X-Region and X-Route.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp


async def run(gateways: list[str], clients: list[str], seconds: float, callers: int, out: str,
              stop_file: Path | None) -> None:
    stop_at = time.monotonic() + seconds  # a bound, in case the runner dies without saying stop
    lines: list[str] = []

    def going() -> bool:
        return time.monotonic() < stop_at and not (stop_file is not None and stop_file.exists())

    async def caller(i: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while going():
            client = clients[(i + n) % len(clients)]
            body = {"pairs": [[f"上海市{i}路{n}号", f"上海{i}路{n}号{time.monotonic():.3f}"]]}  # a miss every time
            sent = time.monotonic()
            record: dict[str, object] = {"sent": sent, "client": client, "status": 0}
            for attempt in range(len(gateways)):
                gateway = gateways[(i + n + attempt) % len(gateways)]
                try:
                    async with session.post(gateway + "/v1/similarity", json=body,
                                            headers={"X-Forwarded-For": client}) as resp:
                        await resp.read()
                        record.update(status=resp.status, version=resp.headers.get("X-Model-Version", ""),
                                      region=resp.headers.get("X-Region", ""), route=resp.headers.get("X-Route", ""),
                                      gateway=gateway)
                        break
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    record["error"] = type(exc).__name__  # unreachable: the next gateway
            record["done"] = time.monotonic()
            lines.append(json.dumps(record))
            n += 1

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(caller(i, session) for i in range(callers)))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", action="append", required=True)
    parser.add_argument("--client", action="append", required=True)
    parser.add_argument("--seconds", type=float, required=True, help="at most this long")
    parser.add_argument("--stop-file", type=Path, help="stop once this file exists")
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.gateway, args.client, args.seconds, args.callers, args.out, args.stop_file))


if __name__ == "__main__":
    main()

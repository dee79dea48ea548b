"""A TCP proxy that can cut a region off: ``python tcp_proxy.py LISTEN_PORT TARGET_PORT CUT_FILE``.

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. While CUT_FILE exists, new
connections are closed at once and open ones are dropped, as a network partition that
takes the region's port away would; once the file is gone, traffic flows again.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

CHECK_S = 0.05


async def main(listen: int, target: int, cut: Path) -> None:
    open_writers: set[asyncio.StreamWriter] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if cut.exists():
            client_writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        open_writers.update((client_writer, upstream_writer))
        try:
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
        finally:
            open_writers.difference_update((client_writer, upstream_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        while True:  # drop what is open the moment the cut begins
            await asyncio.sleep(CHECK_S)
            if cut.exists():
                for writer in list(open_writers):
                    writer.transport.abort()
                open_writers.clear()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))

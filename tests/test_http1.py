"""The gateway's lean HTTP/1.1 client against real servers on loopback: an aiohttp app
(what nodes run) and a raw asyncio server for the answers aiohttp does not send."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from geogate.gateway.dataplane.http1 import Http1Error, Http1Pool


@pytest.fixture
async def app_url() -> AsyncIterator[tuple[str, list[str]]]:
    peers: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(f"{request.transport.get_extra_info('peername')}")  # type: ignore[union-attr]
        if request.query.get("sleep"):
            await asyncio.sleep(float(request.query["sleep"]))
        body = await request.read()
        return web.Response(body=body[::-1], headers={"X-Model-Version": "v1", "X-Seen": request.headers["X-A"]})

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", peers
    await runner.cleanup()


async def test_posts_and_reuses_one_connection(app_url: tuple[str, list[str]]) -> None:
    url, peers = app_url
    pool = Http1Pool()
    try:
        for i in range(5):
            answer = await pool.request("POST", url, "/echo", f"abc{i}".encode(), {"X-A": str(i)}, 5)
            assert (answer.status, answer.body) == (200, f"{i}cba".encode())
            assert answer.headers["x-model-version"] == "v1" and answer.headers["x-seen"] == str(i)
        assert len(set(peers)) == 1  # keep-alive: one connection for all five
        answer = await pool.request("POST", url, "/nope", b"", {}, 5)
        assert answer.status == 404
    finally:
        await pool.close()


async def test_a_timeout_raises_and_the_connection_is_not_reused(app_url: tuple[str, list[str]]) -> None:
    url, peers = app_url
    pool = Http1Pool()
    try:
        with pytest.raises(TimeoutError):
            await pool.request("POST", url, "/echo?sleep=2", b"x", {"X-A": "1"}, 0.1)
        answer = await pool.request("POST", url, "/echo", b"ok", {"X-A": "2"}, 5)
        assert answer.body == b"ko" and len(set(peers)) == 2  # a fresh connection, not the half-used one
    finally:
        await pool.close()


async def raw_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[
        asyncio.Server, str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)


async def test_chunked_answers_and_connection_close() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n")
        await _read_request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        await writer.drain()
        writer.close()

    server, url = await raw_server(handle)
    pool = Http1Pool()
    try:
        first = await pool.request("POST", url, "/", b"1", {}, 5)
        assert (first.status, first.body) == (200, b"abcdefg")
        second = await pool.request("POST", url, "/", b"2", {}, 5)  # the same, kept-alive connection
        assert (second.status, second.body) == (503, b"no")
        assert not any(pool._idle.values())  # Connection: close is honoured
    finally:
        await pool.close()
        server.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes without saying so: the client's pooled connection is stale

    server, url = await raw_server(handle)
    pool = Http1Pool()
    try:
        for _ in range(3):
            assert (await pool.request("POST", url, "/", b"x", {}, 5)).body == b"ok"
        assert connections == 3
    finally:
        await pool.close()
        server.close()


async def test_garbage_and_broken_answers_are_errors() -> None:
    answers = iter([b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"HTTP/1.1 200 OK\r\n\r\n"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    server, url = await raw_server(handle)
    pool = Http1Pool()
    try:
        for match in ("status line", "middle of an answer", "without Content-Length"):
            with pytest.raises(Http1Error, match=match):
                await pool.request("POST", url, "/", b"x", {}, 5)
        with pytest.raises(OSError):
            await pool.request("POST", "http://127.0.0.1:1", "/", b"x", {}, 5)  # nothing listens
    finally:
        await pool.close()
        server.close()


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls")
        await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ssl)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    trusted, untrusted = Http1Pool(ssl_context=client_ssl), Http1Pool()
    try:
        assert (await trusted.request("POST", url, "/", b"x", {}, 5)).body == b"tls"
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.request("POST", url, "/", b"x", {}, 5)
    finally:
        await trusted.close()
        await untrusted.close()
        server.close()

"""HTTP plumbing both services share: request ids, bodies with a size limit, deadlines,
and the one place where errors become the JSON error shape."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from geogate.shared.errors import (
    ExpectationFailed,
    GeogateError,
    InvalidHeader,
    MalformedHTTP,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    error_body,
)

__all__ = [
    "JSON",
    "MAX_DEADLINE_MS",
    "REQUEST_ID",
    "AppRunner",
    "deadline",
    "error_response",
    "from_http_exception",
    "guarded",
    "json_response",
    "read_body",
    "request_id",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"
REQUEST_ID = "geogate.request_id"
MAX_DEADLINE_MS = 600_000
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id(request: web.Request) -> str:
    """The caller's X-Request-ID when it is sane, else a new one; stored on the request."""
    rid: str | None = request.get(REQUEST_ID)
    if rid is None:
        given = request.headers.get("X-Request-ID", "")
        rid = given if given and _REQUEST_ID_RE.match(given) else os.urandom(16).hex()
        request[REQUEST_ID] = rid
    return rid


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes; at most {limit} are allowed")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"body over {limit} bytes") from exc
    if len(body) > limit:  # client_max_size may be set higher than this route's limit
        raise PayloadTooLarge(f"body of {len(body)} bytes; at most {limit} are allowed")
    return body


def deadline(request: web.Request, default_ms: int) -> float:
    """The caller's deadline as event-loop time, from ``X-Deadline-Ms`` (milliseconds the
    caller is willing to wait from now) or the default."""
    raw = request.headers.get("X-Deadline-Ms")
    if raw is None:
        ms = float(default_ms)
    else:
        try:
            ms = float(raw.strip())
        except ValueError:
            raise InvalidHeader(f"X-Deadline-Ms must be a number of milliseconds, not {raw[:40]!r}") from None
        if not 0 < ms <= MAX_DEADLINE_MS:  # also rejects nan and inf
            raise InvalidHeader(f"X-Deadline-Ms must be in (0, {MAX_DEADLINE_MS}]")
    return asyncio.get_running_loop().time() + ms / 1000


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def error_response(exc: GeogateError, rid: str) -> web.Response:
    body = exc.body if exc.body is not None else error_body(exc.code, exc.message, rid)
    return json_response(body, exc.status, exc.headers() or None)


async def guarded(handler: Handler, request: web.Request, rid: str, log: logging.Logger) -> web.StreamResponse:
    """The handler's response, or its error in the JSON error shape: never a bare 500."""
    try:
        return await handler(request)
    except GeogateError as exc:
        return error_response(exc, rid)
    except web.HTTPException as exc:
        return error_response(from_http_exception(exc), rid)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, rid)
        return error_response(GeogateError("internal error"), rid)


def from_http_exception(exc: web.HTTPException) -> GeogateError:
    """aiohttp's own errors (no route, wrong method, body too large) in our tree."""
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method not allowed; use {', '.join(sorted(exc.allowed_methods))}")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("body too large")
    error = GeogateError(exc.reason or "error")
    error.status = exc.status
    error.code = (exc.reason or "error").lower().replace(" ", "_")
    return error


# -- below the app: what aiohttp answers before any route or middleware runs -------------

protocol_log = logging.getLogger("geogate.http.protocol")
_QUOTED = re.compile(r":? b['\"]")  # where aiohttp's message starts quoting the request's bytes


class _Handler(RequestHandler):
    """A request that breaks HTTP/1.1 itself (a control character in a header, a header
    line over 8 KiB, more than 128 headers, an unknown method) never reaches the app:
    aiohttp's parser answers it, as text/plain and with a traceback logged at ERROR. Such
    requests are the client's mistake, so they get the JSON error shape and one line at
    info; anything else (a 5xx) keeps aiohttp's handling."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not 400 <= status < 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # The first line only: the rest of aiohttp's message quotes the offending bytes,
        # which may be a credential.
        reason = _QUOTED.split((message or str(exc) or "").split("\n", 1)[0], 1)[0].rstrip(": ")[:200]
        if len(reason) < 4:  # aiohttp words some as the bad token alone ("*")
            reason = "malformed request line"
        protocol_log.info("refused a malformed request from %s: %d %s", request.remote, status, reason)
        error = MalformedHTTP(f"the request is not valid HTTP/1.1: {reason}")
        error.status = status
        rid = os.urandom(16).hex()
        response = error_response(error, rid)
        response.headers["X-Request-ID"] = rid
        response.force_close()  # the parser lost its place in the stream
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


async def _refuse_unknown_expect(inner: Handler, request: web.Request) -> web.StreamResponse:
    """aiohttp answers an Expect other than 100-continue with a text/plain 417 from the
    route's expect handler, before any middleware; answer it in the JSON shape instead."""
    expect = request.headers.get("Expect")
    if expect is not None and expect.strip().lower() != "100-continue":
        rid = request_id(request)
        response = error_response(ExpectationFailed("only 'Expect: 100-continue' is supported"), rid)
        response.headers["X-Request-ID"] = rid
        return response
    return await inner(request)


class AppRunner(web.AppRunner):
    """aiohttp's runner, with every answer given below the app in the JSON error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside Application._make_handler and offers no hook
        # for the connection handler's class; only that class changes here.
        server.__class__ = _Server
        server.request_handler = functools.partial(_refuse_unknown_expect, server.request_handler)
        return server

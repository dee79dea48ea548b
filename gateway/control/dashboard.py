"""``/dashboard``: the ops page. Static: its data comes from the admin API (``/admin/v1/events``)
with the viewer's own token, so serving it needs no access check."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["dashboard"]

PAGE = Path(__file__).with_name("dashboard.html")


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy":
                                 "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' "
                                 "'unsafe-inline'; img-src 'self' data:"})

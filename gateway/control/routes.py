"""The admin API's routes, its OpenAPI document and the dashboard, on one application."""

from __future__ import annotations

from aiohttp import web

from geogate.gateway.control import admin, clients
from geogate.gateway.control.dashboard import dashboard
from geogate.gateway.control.openapi import document
from geogate.shared.http import json_response

__all__ = ["OPENAPI", "add_admin_routes"]

ROUTES = [*admin.ROUTES, *clients.ROUTES]
OPENAPI = document([route for route, _ in ROUTES])


async def openapi(request: web.Request) -> web.Response:
    """The document is public, like the client API's: it names routes, not secrets."""
    return json_response(OPENAPI)


def add_admin_routes(app: web.Application) -> None:
    for route, handler in ROUTES:
        app.router.add_route(route.method, route.path, handler)
    app.router.add_get("/admin/v1/openapi.json", openapi)
    app.router.add_get("/dashboard", dashboard)

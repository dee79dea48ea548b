"""The ops dashboard in a real headless Chromium (Debian's, driven by Playwright): it lists
every region, shows a killed node as unhealthy, reflects a drain within seconds, hides
actions from a viewer, a switch through its dialog changes the active color, and an
admin adds a client (its key is served) and revokes it (its key is refused).

A screenshot is saved as a test artifact under ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from admin_world import EU, TOKENS, World, auth, two_region_world
from helpers import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:  # .ci/run installs Debian's chromium; a laptop without it skips, saying so
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = REPO / "artifacts"
SETTLE_MS = 15_000  # the page updates within about a second of a change; this is the deadline


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with two_region_world(tmp_path_factory.mktemp("dashboard-world"), watch_window_s=0) as w:
        yield w


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    """After the world: Playwright's sync API keeps an event loop running on this thread,
    so everything asyncio runs on another (``off_loop``)."""
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield instance
        instance.close()


def open_page(browser: Any, world: World, role: str, query: str = "") -> Any:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{world.a.url}/dashboard{query}")
    page.fill("#token", TOKENS[role])
    page.click("#login-button")
    page.wait_for_selector("#live.ok", timeout=SETTLE_MS)  # the event stream is connected
    return page


def call_admin(world: World, path: str, body: dict[str, Any], role: str = "operator") -> dict[str, Any]:
    async def post() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(world.a.url + "/admin/v1" + path, json=body,
                                                               headers=auth(role)) as resp:
            data: dict[str, Any] = await resp.json()
            assert resp.status == 200, data
            return data

    return off_loop(post())


def off_loop(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_viewer_sees_every_region_and_no_actions(browser: Any, world: World) -> None:
    page = open_page(browser, world, "viewer")
    page.wait_for_selector(".region[data-region='eu-central']", timeout=SETTLE_MS)
    regions = page.eval_on_selector_all(".region", "els => els.map(e => e.dataset.region)")
    assert sorted(regions) == ["eu-central", "us-east"]
    assert page.inner_text("#active") == "blue"
    assert "vera (viewer)" in page.inner_text("#who")
    assert not page.is_visible("#switch") and page.locator("button[data-act]").count() == 0
    assert not page.is_visible("#clients-section")  # clients are the admins' business
    # the node table says each node's state in words, not only in colour
    assert page.locator(".node.ok .health").first.inner_text() == "healthy"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-viewer.png"), full_page=True)
    page.close()


def test_per_region_view_shows_one_region(browser: Any, world: World) -> None:
    page = open_page(browser, world, "viewer", "?region=us-east")
    page.wait_for_selector(".region[data-region='us-east']", timeout=SETTLE_MS)
    assert page.locator(".region").count() == 1
    page.close()


def test_a_regions_busiest_clients_are_listed(browser: Any, world: World) -> None:
    key = call_admin(world, "/clients", {"name": "orders-dash", "reason": "dashboard test"}, role="admin")["api_key"]
    stop = threading.Event()

    async def traffic() -> None:  # steady calls by that client at eu-central's gateway until the page shows it
        async with aiohttp.ClientSession() as http:
            n = 0
            while not stop.is_set() and n < 2000:
                n += 1
                async with http.post(world.a.url + "/v1/parse", json={"addresses": [f"杭州市文一西路{n}号"]},
                                     headers={"X-API-Key": key, "X-Forwarded-For": EU}) as resp:
                    assert resp.status == 200

    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(asyncio.run, traffic())
        try:
            page = open_page(browser, world, "viewer")
            row = page.wait_for_selector(".region[data-region='eu-central'] .clients tr.client:has-text('orders-dash')",
                                         timeout=SETTLE_MS)
            assert "orders-dash" in row.inner_text()
            page.close()
        finally:
            stop.set()
            calls.result()


def score_status(world: World, key: str) -> int:
    async def post() -> int:
        async with aiohttp.ClientSession() as http, http.post(world.a.url + "/v1/parse", json={"addresses": ["杭州市"]},
                                                               headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status

    result: int = off_loop(post())
    return result


def test_an_admin_adds_a_client_and_revokes_it(browser: Any, world: World) -> None:
    page = open_page(browser, world, "admin")
    page.wait_for_selector("#clients-section:not(.hidden)", timeout=SETTLE_MS)
    page.fill("#client-name", "billing-dash")
    page.click("#client-add")
    page.wait_for_selector("#confirm[open]", timeout=SETTLE_MS)
    assert "shown once" in page.inner_text("#confirm-body")
    page.fill("#confirm-reason", "client from the dashboard test")
    page.click("#confirm-ok")
    page.wait_for_selector("#client-key:not(.hidden)", timeout=SETTLE_MS)
    key = page.inner_text("#client-key-value")
    assert key.startswith("gg_") and page.inner_text("#client-key-for") == "billing-dash"
    row = "#clients tr.client-row[data-client='billing-dash']"
    playwright.expect(page.locator(f"{row} .client-state")).to_have_text("active", timeout=SETTLE_MS)
    assert score_status(world, key) == 200  # the key the page showed works

    page.click(f"{row} button[data-client-act='revoke']")
    page.wait_for_selector("#confirm[open]", timeout=SETTLE_MS)
    page.click("#confirm-ok")
    playwright.expect(page.locator(f"{row} .client-state")).to_have_text("revoked", timeout=SETTLE_MS)
    assert page.locator(f"{row} button").count() == 0  # nothing left to manage
    assert score_status(world, key) == 401  # the page's gateway listed it revoked: it refuses the key
    page.wait_for_selector("#audit li:has-text('client_revoke')", timeout=SETTLE_MS)
    page.close()


def test_a_drain_shows_within_seconds(browser: Any, world: World) -> None:
    page = open_page(browser, world, "viewer")
    page.wait_for_selector(".region[data-region='eu-central'] .region-state", timeout=SETTLE_MS)
    call_admin(world, "/regions/eu-central/drain", {"reason": "dashboard test"})
    try:
        page.wait_for_selector(".region[data-region='eu-central'].state-drained", timeout=SETTLE_MS)
        assert page.inner_text(".region[data-region='eu-central'] .region-state") == "drained"
        page.wait_for_selector("#audit li:has-text('region_drained')", timeout=SETTLE_MS)
    finally:
        call_admin(world, "/regions/eu-central/restore", {"reason": "dashboard test over"})
    page.wait_for_selector(".region[data-region='eu-central'].state-active", timeout=SETTLE_MS)
    page.close()


def test_an_operator_switches_through_the_dialog(browser: Any, world: World) -> None:
    page = open_page(browser, world, "operator")
    # the actions come with the render after the page has learned the token's role
    page.wait_for_selector("button[data-act='drain']", timeout=SETTLE_MS)
    assert page.is_visible("#switch") and page.locator("button[data-act='drain']").count() == 2
    page.click("#switch")
    page.wait_for_selector("#confirm[open]", timeout=60_000)  # after the pre-checks ran
    body = page.inner_text("#confirm-body")
    assert "pre-checks passed" in body and "golden set" in body and "eu-central" in body
    page.fill("#confirm-reason", "switch from the dashboard test")
    page.click("#confirm-ok")
    playwright.expect(page.locator("#active")).to_have_text("green", timeout=SETTLE_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-operator.png"), full_page=True)
    call_admin(world, "/rollback", {"reason": "back to blue after the dashboard test"})
    playwright.expect(page.locator("#active")).to_have_text("blue", timeout=SETTLE_MS)
    page.close()


def test_a_killed_node_turns_unhealthy(browser: Any, world: World) -> None:
    page = open_page(browser, world, "viewer")
    victim = world.nodes["us-east-green"]
    selector = f".node[data-url='{victim.url}']"
    page.wait_for_selector(f"{selector}.ok", timeout=SETTLE_MS)
    victim.proc.kill()
    page.wait_for_selector(f"{selector}.bad", timeout=SETTLE_MS)
    assert page.inner_text(f"{selector} .health") == "UNHEALTHY"
    page.screenshot(path=str(ARTIFACTS / "dashboard-node-down.png"), full_page=True)
    page.close()


def test_screenshots_were_saved() -> None:
    saved = sorted(p.name for p in ARTIFACTS.glob("dashboard-*.png")) if ARTIFACTS.exists() else []
    assert {"dashboard-viewer.png", "dashboard-operator.png"} <= set(saved), saved
    assert all((ARTIFACTS / name).stat().st_size > 10_000 for name in saved)

"""duroxy ui in a real browser (Playwright driving the system's Chromium), on a SQLite
store and on PostgreSQL: log in, page through the list and back, filter it by state,
id prefix and created time, open an instance and see its timeline, key-value state and
tree, enqueue a message with the token and see the instance take it, cancel one, be
refused without the token, and find no action under --read-only. The SQLite run also
refreshes the screenshots in docs/images.

Needs ``pip install playwright`` and Chromium at /usr/bin/chromium
(``apt-get install chromium``); the browser download of ``playwright install`` is not
used. Skips with the reason when either is missing.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api", reason="Playwright is not installed "
                    "(pip install playwright)")
pytest.importorskip("starlette", reason="the ui extra is not installed (pip install duroxy[ui])")

from playwright.async_api import Browser, Page, async_playwright, expect

import uikit
from duroxy import Client, OrchestrationState, Runtime, connect
from duroxy.providers.base import Provider

CHROMIUM = os.environ.get("DUROXY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TOKEN = "browser-token"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ui.db'}"
    dsn: str = request.getfixturevalue("dsn")
    schemas: Callable[[], str] = request.getfixturevalue("schemas")
    from workerkit import store_url as pg_url

    return pg_url(dsn, schemas())


async def _login(page: Page, base: str) -> None:
    await page.goto(base + "/instances")
    await expect(page).to_have_url(re.compile(r"/login\?"))
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Instances")


async def test_dashboard_in_a_browser(browser: Browser, store_url: str, tmp_path: Path) -> None:
    provider = connect(store_url)
    runtime: Runtime | None = None
    ui: uikit.UiProcess | None = None
    try:
        await uikit.populate(provider)
        boundary = await _start_late(Client(provider))
        # A runtime keeps running, so what the dashboard enqueues or cancels takes effect.
        acts, orchs = uikit.registries()
        runtime = await Runtime.start(provider, acts, orchs)
        for iid in LATE:
            await Client(provider).wait_for_orchestration(iid, 30)
        ui = uikit.UiProcess(store_url, "--token", TOKEN, log=tmp_path / "ui.log")
        ui.wait_up()
        await _browse_and_act(browser, ui.url, provider, boundary,
                              screenshots="sqlite" in store_url)
    finally:
        if ui is not None:
            ui.stop()
        if runtime is not None:
            await runtime.shutdown(timeout=2)
        await provider.close()
    read_only = uikit.UiProcess(store_url, "--read-only", log=tmp_path / "ro.log")
    try:
        read_only.wait_up()
        await _read_only(browser, read_only.url)
    finally:
        read_only.stop()


LATE = ("late-1", "late-2")


async def _start_late(client: Client) -> str:
    """Start ``LATE`` in a later second than every other instance, and return that
    second (``YYYY-MM-DDTHH:MM:SS``, UTC): the created-time filter's boundary."""
    newest = max(i.created_at for i in await client.list_instances())
    boundary = math.floor(newest.timestamp()) + 1
    while time.time() <= boundary:  # (the form's times have whole seconds)
        await asyncio.sleep(boundary - time.time() + 0.01)
    for iid in LATE:
        await client.start_orchestration(iid, "quick", 1)
    return datetime.fromtimestamp(boundary, UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def _browse_and_act(browser: Browser, base: str, provider: Provider, boundary: str,
                          screenshots: bool) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await _login(page, base)
    client = Client(provider)
    everyone = [i.instance_id for i in await client.list_instances()]
    assert len(everyone) == 68
    rows = page.locator("#instances tbody tr")
    # The list: 50 a page, oldest first, counts by state, paged with the client's tokens.
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_have_attribute("data-instance", everyone[0])
    await expect(page.locator('[data-state="RUNNING"] .n')).to_have_text("2")
    await expect(page.locator('[data-state="FAILED"] .n')).to_have_text("1")
    await expect(page.locator("#summary")).to_contain_text("68 matching")
    if screenshots:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS_IMAGES / "ui-instances.png"))
    await page.click("a[rel=next]")
    await expect(rows).to_have_count(18)
    await expect(rows.first).to_have_attribute("data-instance", everyone[50])
    await expect(rows.last).to_have_attribute("data-instance", everyone[-1])
    await expect(page.locator("#summary")).to_contain_text("page 2")
    await expect(page.locator("a[rel=next]")).to_have_count(0)
    await page.click("a[rel=prev]")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_have_attribute("data-instance", everyone[0])

    # Created time: after the boundary only the late ones, before it all the others.
    await page.fill("input[name=created_after]", boundary)
    await page.click("#filters button[type=submit]")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_have_attribute("data-instance", LATE[0])
    await expect(page.locator("#summary")).to_contain_text("2 matching")
    await page.goto(base + "/instances")
    await page.fill("input[name=created_before]", boundary)
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#summary")).to_contain_text("66 matching")
    await expect(page.locator('[data-state="COMPLETED"] .n')).to_have_text("63")

    await page.goto(base + "/instances")
    await page.fill("input[name=prefix]", "order-")
    await page.select_option("select[name=state]", "RUNNING")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#instances tbody tr")).to_have_count(1)
    await expect(page.locator("#instances tbody tr").first).to_have_attribute(
        "data-instance", "order-3")
    await page.click('[data-state="COMPLETED"]')  # the counts keep the other filters
    await expect(page.locator("#instances tbody tr")).to_have_count(3)

    # An instance: its timeline and its tree, and the child's way back.
    await page.goto(base + "/instances?prefix=order-1")
    await page.click('#instances a:text-is("order-1")')
    await expect(page.locator("h1")).to_contain_text("order-1")
    await expect(page.locator("#state")).to_have_text("COMPLETED")
    bars = page.locator("#execution-1 .row")
    await expect(page.locator("#execution-1 .row.kind-activity")).to_have_count(2)
    await expect(page.locator("#execution-1 .row.kind-timer .span")).to_have_count(1)
    await expect(bars.filter(has_text="child ship")).to_have_count(1)
    await expect(page.locator('#kv [data-key="sku"]')).to_contain_text('"A-1"')
    await expect(page.locator('#kv [data-key="charged"]')).to_contain_text("charged 12.50")
    await expect(page.locator("#executions tbody tr")).to_have_count(1)
    tree_links = page.locator("#tree a")
    await expect(tree_links).to_have_count(2)
    if screenshots:
        await page.screenshot(path=str(DOCS_IMAGES / "ui-instance.png"), full_page=True)
    await tree_links.nth(1).click()
    await expect(page.locator("h1")).to_contain_text("order-1::sub::")
    await page.click("#parent-link")
    await expect(page.locator("h1")).to_contain_text("order-1")

    # Enqueue a message with the token (the session from the login form): the instance
    # takes it, and the page, refreshing itself while the instance runs, shows so.
    await page.goto(base + "/instance?id=inbox-1")
    await expect(page.locator("#executions tbody tr")).to_have_count(3)
    await expect(page.locator('#kv [data-key="last"]')).to_contain_text('"message 2"')
    await page.fill("#enqueue input[name=queue]", "inbox")
    await page.fill("#enqueue input[name=data]", '"hello"')
    await page.click("#enqueue button[type=submit]")
    await expect(page.locator(".done")).to_contain_text("enqueued on 'inbox'")
    await expect(page.locator('#kv [data-key="last"]')).to_contain_text(
        '"hello"', timeout=20_000)
    await expect(page.locator("#kv [data-key=taken]")).to_contain_text("3")
    await expect(page.locator("#executions tbody tr")).to_have_count(4)
    assert await client.get_kv_value("inbox-1", "last") == "hello"

    # Cancel the running one.
    await page.goto(base + "/instance?id=order-3")
    await expect(page.locator("#state")).to_have_text("RUNNING")
    await expect(page.locator("#custom-status")).to_contain_text("waiting")
    await page.fill("#cancel input[name=reason]", "from the dashboard")
    await page.click("#cancel button[type=submit]")
    await expect(page.locator(".done")).to_contain_text("cancellation requested")
    # The page refreshes itself while the instance runs, until it shows the end.
    await expect(page.locator("#state")).to_have_text("CANCELLED", timeout=20_000)
    status = await Client(provider).get_orchestration_status("order-3")
    assert status.state is OrchestrationState.CANCELLED
    assert status.error is not None and "from the dashboard" in status.error.message

    # Without the token: pages lead to the login form, actions are refused.
    stranger = await browser.new_context()
    response = await stranger.request.post(base + "/actions/delete",
                                           form={"instance_id": "order-1"})
    assert response.status == 401
    cross = await context.request.post(base + "/actions/delete",
                                       form={"instance_id": "order-1"},
                                       headers={"Origin": "http://evil.example"})
    assert cross.status == 403
    bye: dict[str, str | float | bool] = {"instance_id": "inbox-1", "queue": "inbox",
                                         "data": '"bye"'}
    response = await stranger.request.post(base + "/actions/enqueue", form=bye)
    assert response.status == 401
    response = await context.request.post(base + "/actions/enqueue", form=bye,
                                          headers={"Origin": "http://evil.example"})
    assert response.status == 403
    assert await client.get_kv_value("inbox-1", "last") == "hello"
    assert (await Client(provider).get_orchestration_status("order-1")).state is \
        OrchestrationState.COMPLETED
    anonymous = await stranger.new_page()
    await anonymous.goto(base + "/instance?id=order-1")
    await expect(anonymous.locator("h1")).to_have_text("Log in")
    await stranger.close()
    await context.close()


async def _read_only(browser: Browser, base: str) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(base + "/instance?id=order-2")
    await expect(page.locator("#state")).to_have_text("FAILED")
    await expect(page.locator("#actions")).to_have_count(0)
    await expect(page.locator("form[method=post]")).to_have_count(0)
    for action in ("cancel", "delete", "raise-event", "enqueue"):
        response = await context.request.post(base + f"/actions/{action}",
                                               form={"instance_id": "order-2"})
        assert response.status == 404, action
    await context.close()

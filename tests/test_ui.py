"""duroxy ui without a browser: the ASGI app over an in-memory store (pages, filters,
paging, timeline and tree; the token, read-only and cross-site guarantees) and the
command's refusal to start on a non-loopback host without a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install duroxy[ui])")
pytest.importorskip("httpx", reason="httpx is not installed")

import httpx

import uikit
from duroxy import Client, OrchestrationState
from duroxy.providers.memory import InMemoryProvider
from duroxy.ui import UiSettings, check_settings, create_app, is_loopback

TOKEN = "s3cret-token"
ORIGIN = "http://dash.test"


@pytest.fixture
async def store() -> AsyncIterator[InMemoryProvider]:
    provider = InMemoryProvider()
    await uikit.populate(provider)
    yield provider
    await provider.close()


def http(store: InMemoryProvider, **settings: object) -> httpx.AsyncClient:
    app = create_app(Client(store), UiSettings(store="memory", **settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-instance="([^"]+)"', html)


async def test_list_filters_paging_and_counts(store: InMemoryProvider) -> None:
    async with http(store) as ui:
        first = (await ui.get("/instances")).text
        assert len(rows(first)) == 50 and "65 matching" in first
        assert re.search(r'data-state="RUNNING"[^>]*>\s*<span class="n">1</span>', first)
        assert re.search(r'data-state="COMPLETED"[^>]*>\s*<span class="n">63</span>', first)
        second = (await ui.get("/instances", params={"page": 1})).text
        assert len(rows(second)) == 15 and not set(rows(first)) & set(rows(second))
        assert rows((await ui.get("/instances", params={"state": "failed"})).text) == [
            "order-2"]
        assert sorted(rows((await ui.get("/instances", params={"prefix": "bulk-1"})).text)) \
            == [f"bulk-1{i}" for i in range(10)]
        named = rows((await ui.get("/instances", params={"name": "ship"})).text)
        assert len(named) == 2 and all(i.startswith("order-") for i in named)
        late = rows((await ui.get("/instances", params={
            "created_after": "2999-01-01T00:00"})).text)
        assert late == []
        early = rows((await ui.get("/instances", params={
            "created_before": "2999-01-01T00:00", "prefix": "order-"})).text)
        assert len(early) == 5
        bad = await ui.get("/instances", params={"created_after": "yesterday"})
        assert bad.status_code == 400


async def test_instance_page_shows_timeline_tree_and_payloads(store: InMemoryProvider) -> None:
    async with http(store) as ui:
        page = (await ui.get("/instance", params={"id": "order-1"})).text
        assert "COMPLETED" in page and "charged 12.50" in page
        kinds = re.findall(r'class="row kind-(\w+)', page)
        assert kinds.count("activity") == 2 and kinds.count("timer") == 1
        assert kinds.count("sub_orchestration") == 1
        (child,) = [i.instance_id for i in await Client(store).list_instances(
            parent_instance_id="order-1")]
        assert f'/instance?id={child.replace(":", "%3A")}' in page  # the tree links it
        child_page = (await ui.get("/instance", params={"id": child})).text
        assert 'id="parent-link"' in child_page and "order-1" in child_page
        running = (await ui.get("/instance", params={"id": "order-3"})).text
        assert 'data-refresh="2.0"' in running and "waiting" in running
        assert 'id="cancel"' in running
        failed = (await ui.get("/instance", params={"id": "order-2"})).text
        assert "cannot charge -1" in failed
        missing = await ui.get("/instance", params={"id": "nope"})
        assert missing.status_code == 404
        workers = (await ui.get("/workers", params={"all": "1"})).text
        assert "data-worker=" in workers


async def test_read_only_serves_no_action_at_all(store: InMemoryProvider) -> None:
    async with http(store, read_only=True) as ui:
        page = (await ui.get("/instance", params={"id": "order-3"})).text
        assert "<form method=\"post\"" not in page and 'id="actions"' not in page
        for action in ("cancel", "delete", "raise-event", "enqueue"):
            response = await ui.post(f"/actions/{action}", data={"instance_id": "order-3"})
            assert response.status_code == 404
    assert (await Client(store).get_orchestration_status("order-3")).state is \
        OrchestrationState.RUNNING


async def test_the_token_guards_every_request(store: InMemoryProvider) -> None:
    client = Client(store)
    async with http(store, token=TOKEN) as ui:
        assert (await ui.get("/instances")).status_code == 401
        browser = await ui.get("/instances", headers={"accept": "text/html"})
        assert browser.status_code == 303 and browser.headers["location"].startswith("/login")
        refused = await ui.post("/actions/delete", data={"instance_id": "bulk-00"})
        assert refused.status_code == 401
        wrong = await ui.post("/actions/delete", data={"instance_id": "bulk-00"},
                              headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get_orchestration_status("bulk-00")).state is \
            OrchestrationState.COMPLETED
        done = await ui.post("/actions/delete", data={"instance_id": "bulk-00"},
                             headers={"authorization": f"Bearer {TOKEN}"})
        assert done.status_code == 303
        assert (await client.get_orchestration_status("bulk-00")).state is \
            OrchestrationState.NOT_FOUND
        # The login form sets a session cookie (not the token) that works from then on.
        bad = await ui.post("/login", data={"token": "nope", "next": "/instances"})
        assert bad.status_code == 401
        good = await ui.post("/login", data={"token": TOKEN, "next": "/instances"})
        assert good.status_code == 303
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
        assert (await ui.get("/instances")).status_code == 200


async def test_actions_refuse_cross_site_requests(store: InMemoryProvider) -> None:
    client = Client(store)
    async with http(store, token=TOKEN) as ui:
        auth = {"authorization": f"Bearer {TOKEN}"}
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"},
                        {"sec-fetch-site": "same-site"}, {"origin": "null"}):
            response = await ui.post("/actions/cancel", data={"instance_id": "order-3"},
                                     headers={**auth, **headers})
            assert response.status_code == 403, headers
        same = await ui.post("/actions/raise-event",
                             data={"instance_id": "order-3", "event_name": "ping",
                                   "data": '{"n": 1}'},
                             headers={**auth, "origin": ORIGIN, "sec-fetch-site": "same-origin"})
        assert same.status_code == 303 and "raised" in same.headers["location"]
        not_json = await ui.post("/actions/raise-event",
                                 data={"instance_id": "order-3", "event_name": "x",
                                       "data": "{oops"}, headers=auth)
        assert not_json.status_code == 400
    assert (await client.get_orchestration_status("order-3")).state is \
        OrchestrationState.RUNNING


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.1.2.3") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.org")
    assert check_settings("127.0.0.1", None, False) is None
    assert check_settings("0.0.0.0", "t", False) is None
    assert check_settings("0.0.0.0", None, True) is None
    problem = check_settings("0.0.0.0", None, False)
    assert problem is not None and "--token" in problem and "--read-only" in problem


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("DUROXY_UI_TOKEN", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "duroxy", *args], capture_output=True,
                          text=True, timeout=60, env=full)


def test_ui_refuses_a_public_host_without_a_token(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'none.db'}"
    out = run_cli("ui", "--store", store, "--host", "0.0.0.0")
    assert out.returncode == 2
    assert "--token" in out.stderr and "--read-only" in out.stderr
    assert not (tmp_path / "none.db").exists()  # refused before the store was opened


def test_ui_serves_its_pages_from_the_command(tmp_path: Path) -> None:
    import asyncio

    from duroxy.providers.sqlite import SqliteProvider

    async def make() -> None:
        provider = SqliteProvider(tmp_path / "s.db")
        try:
            await uikit.populate(provider)
        finally:
            await provider.close()

    asyncio.run(make())
    # the token from the environment
    ui = uikit.UiProcess(f"sqlite:///{tmp_path / 's.db'}", log=tmp_path / "ui.log",
                         env={"DUROXY_UI_TOKEN": TOKEN})
    try:
        ui.wait_up()
        plain = httpx.get(ui.url + "/instances")
        assert plain.status_code == 401
        page = httpx.get(ui.url + "/instances", headers={"authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and len(rows(page.text)) == 50
    finally:
        ui.stop()
    assert "127.0.0.1" in (tmp_path / "ui.log").read_text()


def test_screenshots_are_referenced_by_the_docs() -> None:
    """The browser tests write the screenshots that docs/dashboard.md shows."""
    docs = Path(__file__).resolve().parent.parent / "docs"
    text = (docs / "dashboard.md").read_text()
    for name in ("ui-instances.png", "ui-instance.png"):
        assert f"images/{name}" in text
        assert (docs / "images" / name).is_file()

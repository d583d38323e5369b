"""duroxy ui without a browser: the ASGI app over a SQLite store (and PostgreSQL for the
list and the instance page): keyset pages, store-side filters, bounded counts and the
bounded id-prefix scan; the instance page's KV, executions, sizes and tree; the
actions (enqueue included) and the token, read-only and cross-site guarantees; and
the command's refusal to start on a non-loopback host without a token."""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install duroxy[ui])")
pytest.importorskip("httpx", reason="httpx is not installed")

import httpx

import uikit
from duroxy import Client, OrchestrationState, Runtime, connect
from duroxy.providers.base import Provider
from duroxy.providers.sqlite import SqliteProvider
from duroxy.ui import UiSettings, _instance, _listing, check_settings, create_app, is_loopback

TOKEN = "s3cret-token"
ORIGIN = "http://dash.test"
AUTH = {"authorization": f"Bearer {TOKEN}"}


# ====================================================================== stores
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uikit's store, made once for the module; each test gets a copy."""
    path = tmp_path_factory.mktemp("ui") / "template.db"

    async def make() -> None:
        provider = SqliteProvider(path)
        try:
            await uikit.populate(provider)
        finally:
            await provider.close()

    asyncio.run(make())
    return path


def copy_store(template: Path, to: Path) -> Path:
    with contextlib.closing(sqlite3.connect(template)) as src, \
            contextlib.closing(sqlite3.connect(to)) as dst:
        src.backup(dst)
    return to


@pytest.fixture
async def store(template: Path, tmp_path: Path) -> AsyncIterator[Provider]:
    provider = SqliteProvider(copy_store(template, tmp_path / "ui.db"))
    yield provider
    await provider.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, template: Path,
                    tmp_path: Path) -> AsyncIterator[Provider]:
    """uikit's store on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        provider: Provider = SqliteProvider(copy_store(template, tmp_path / "ui.db"))
    else:
        dsn: str = request.getfixturevalue("dsn")
        schemas: Callable[[], str] = request.getfixturevalue("schemas")
        from duroxy.providers.postgres import PostgresProvider

        provider = PostgresProvider(dsn, schemas())
        await uikit.populate(provider)
    yield provider
    await provider.close()


def http(store: Provider, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Client(store), UiSettings(store="test", **settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)


def rows(page: str) -> list[str]:
    return re.findall(r'<tr data-instance="([^"]+)"', page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', page)
    return None if found is None else html.unescape(found.group(1))


def count(page: str, state: str) -> str:
    found = re.search(rf'data-state="{state}"[^>]*>\s*<span class="n">([^<]+)</span>', page)
    assert found is not None, state
    return found.group(1)


async def walk(ui: httpx.AsyncClient, url: str) -> tuple[list[list[str]], list[str]]:
    """Every page from ``url`` on, by the "next" links: the rows of each, and each page."""
    pages: list[list[str]] = []
    texts: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        response = await ui.get(next_url)
        assert response.status_code == 200, response.text
        pages.append(rows(response.text))
        texts.append(response.text)
        next_url = link(response.text, "next")
        assert len(pages) < 100, "the next links never end"
    return pages, texts


# ====================================================================== the list
async def test_list_pages_with_the_clients_tokens_and_counts_by_state(
        any_store: Provider) -> None:
    everyone = [i.instance_id for i in await Client(any_store).list_instances()]
    assert len(everyone) == 66
    async with http(any_store) as ui:
        first = (await ui.get("/instances")).text
        assert rows(first) == everyone[:50]  # oldest created first, as the client lists
        assert "66 matching" in first and "page 1 " in first
        assert count(first, "RUNNING") == "2" and count(first, "COMPLETED") == "63"
        assert count(first, "FAILED") == "1" and 'id="counts-capped"' not in first
        assert link(first, "prev") is None and link(first, "first") is None
        next_url = link(first, "next")
        assert next_url is not None and "page=" in next_url
        second = (await ui.get(next_url)).text
        assert rows(second) == everyone[50:] and "page 2 " in second
        assert link(second, "next") is None
        back = link(second, "prev")
        assert back is not None and rows((await ui.get(back)).text) == everyone[:50]
        first_again = link(second, "first")
        assert first_again is not None and rows((await ui.get(first_again)).text) == \
            everyone[:50]

        assert rows((await ui.get("/instances", params={"state": "failed"})).text) == [
            "order-2"]
        named = rows((await ui.get("/instances", params={"name": "ship"})).text)
        assert len(named) == 2 and all(i.startswith("order-") for i in named)
        # A state's count link keeps the other filters.
        by_name = (await ui.get("/instances", params={"name": "ship"})).text
        assert count(by_name, "COMPLETED") == "2" and count(by_name, "RUNNING") == "0"

        bad = await ui.get("/instances", params={"created_after": "yesterday"})
        assert bad.status_code == 400
        stale = await ui.get(next_url.replace("/instances?", "/instances?state=FAILED&"))
        assert stale.status_code == 400 and "first page" in stale.text
        damaged = await ui.get("/instances", params={"page": "not-a-token"})
        assert damaged.status_code == 400


async def test_created_time_filters_are_the_stores(any_store: Provider) -> None:
    infos = await Client(any_store).list_instances()
    by_id = {i.instance_id: i for i in infos}

    def between(earlier: str, later: str) -> datetime:
        """A time strictly between two instances' creation (``created_at`` is rounded to
        the microsecond, the stored time may not be: halfway leaves room either side)."""
        a, b = by_id[earlier].created_at, by_id[later].created_at
        assert b - a >= timedelta(microseconds=4)
        return a + (b - a) / 2

    cut = between("bulk-29", "bulk-30")
    after = [i.instance_id for i in infos if i.created_at > cut]
    assert 30 <= len(after) <= 50 and "bulk-30" in after and "bulk-29" not in after
    async with http(any_store) as ui:
        page = (await ui.get("/instances", params={"created_after": cut.isoformat()})).text
        assert rows(page) == after and f"{len(after)} matching" in page
        page = (await ui.get("/instances", params={
            "created_before": between("bulk-09", "bulk-10").isoformat(),
            "prefix": "bulk-"})).text
        assert rows(page) == [f"bulk-{n:02d}" for n in range(10)]
        assert rows((await ui.get("/instances", params={
            "created_after": "2999-01-01T00:00"})).text) == []
        recent = (await ui.get("/instances", params={"name": "quick"})).text
        last_hour = re.search(r'href="([^"]+)" data-recent="last hour"', recent)
        assert last_hour is not None
        url = html.unescape(last_hour.group(1))
        assert "name=quick" in url and "created_after=" in url
        assert len(rows((await ui.get(url)).text)) == 50  # created just now


async def test_an_id_prefix_is_a_bounded_scan_that_pages_on(
        store: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    everyone = [i.instance_id for i in await Client(store).list_instances()]
    bulk = [i for i in everyone if i.startswith("bulk-")]
    async with http(store) as ui:
        first = (await ui.get("/instances", params={"prefix": "bulk-"})).text
        assert rows(first) == bulk[:50] and 'id="prefix-note"' in first
        assert count(first, "COMPLETED") == "60" and count(first, "RUNNING") == "0"
        assert 'id="scan-cut"' not in first
        pages, _ = await walk(ui, "/instances?prefix=bulk-")
        assert pages == [bulk[:50], bulk[50:]]
        assert rows((await ui.get("/instances", params={"prefix": "bulk-",
                                                        "state": "RUNNING"})).text) == []

        # Small bounds: pages resume inside a chunk, scans stop at the bound and say so,
        # and following "next" shows every match exactly once, in order.
        monkeypatch.setattr(_listing, "PAGE_SIZE", 7)
        monkeypatch.setattr(_listing, "_CHUNK", 10)
        monkeypatch.setattr(_listing, "SCAN_LIMIT", 20)
        pages, texts = await walk(ui, "/instances?prefix=bulk-1")
        assert [i for p in pages for i in p] == [i for i in bulk if i.startswith("bulk-1")]
        assert any('id="scan-cut"' in t for t in texts)
        pages, texts = await walk(ui, "/instances?prefix=bulk-5")
        assert [i for p in pages for i in p] == [f"bulk-5{n}" for n in range(10)]
        assert any(p == [] and 'without filling the page' in t for p, t in zip(
            pages, texts, strict=True))  # the scan stopped before any bulk-5x
        counted = (await ui.get("/instances", params={"prefix": "bulk-"})).text
        in_first_20 = sum(i.startswith("bulk-") for i in everyone[:20])
        assert count(counted, "COMPLETED") == f"{in_first_20}+"
        assert "first 20 instances scanned" in counted


async def test_the_list_reads_a_bounded_number_of_instances(tmp_path: Path) -> None:
    """On 10,000 instances a page reads its 51 instances and the counts at most 1,001 of
    each state from the store, whatever its size (the counts say "1,000+")."""
    provider = SqliteProvider(tmp_path / "big.db")
    try:
        client = Client(provider)
        for n in range(10_000):
            await client.start_orchestration(f"inst-{n:05d}", "quick", n)
        read: list[int] = []
        listed = provider.list_instances

        async def counting(**kw: Any) -> Any:
            found = await listed(**kw)
            read.append(len(found))
            return found

        provider.list_instances = counting  # type: ignore[method-assign]
        bound = _listing.PAGE_SIZE + 1 + len(_listing.STATES) * (_listing.COUNT_CAP + 1)
        async with http(provider) as ui:
            first = (await ui.get("/instances")).text
            assert rows(first) == [f"inst-{n:05d}" for n in range(50)]
            assert sum(read) <= bound
            assert count(first, "PENDING") == "1,000+" and count(first, "RUNNING") == "0"
            assert 'id="counts-capped"' in first and "at least 1,000 matching" in first
            url: str | None = "/instances"
            for _ in range(3):
                assert url is not None
                page = (await ui.get(url)).text
                url = link(page, "next")
            read.clear()
            assert url is not None
            fourth = (await ui.get(url)).text
            assert rows(fourth) == [f"inst-{n:05d}" for n in range(150, 200)]
            assert "page 4 " in fourth and sum(read) <= bound
    finally:
        await provider.close()


# ====================================================================== an instance
async def test_instance_page_shows_kv_executions_sizes_and_tree(any_store: Provider) -> None:
    client = Client(any_store)
    async with http(any_store) as ui:
        page = (await ui.get("/instance", params={"id": "order-1"})).text
        assert "COMPLETED" in page and "charged 12.50" in page
        kinds = re.findall(r'class="row kind-(\w+)', page)
        assert kinds.count("activity") == 2 and kinds.count("timer") == 1
        assert kinds.count("sub_orchestration") == 1 and kinds.count("kv") == 2
        kv = dict(re.findall(r'<tr data-key="([^"]+)"><td class="key">[^<]*</td><td><pre>'
                             r'([^<]*)</pre>', page))
        assert kv == {"charged": "&#34;charged 12.50&#34;", "sku": "&#34;A-1&#34;"}
        (child,) = (await client.get_instance_tree("order-1")).children("order-1")
        assert f'/instance?id={child.replace(":", "%3A")}' in page  # the tree links it
        assert "Instance tree <span class=\"muted\">2 instances" in page
        child_page = (await ui.get("/instance", params={"id": child})).text
        assert 'id="parent-link"' in child_page and "order-1" in child_page

        inbox = (await ui.get("/instance", params={"id": "inbox-1"})).text
        assert re.findall(r'<tr data-execution="(\d+)"', inbox) == ["3", "2", "1"]
        assert inbox.count("CONTINUED_AS_NEW</span>") == 2
        assert '<dd id="custom-status-version">3</dd>' in inbox
        assert 'id="execution-3"' in inbox and "dequeues from inbox" in inbox
        assert '<option value="inbox">' in inbox  # the enqueue form suggests the queue
        kv = dict(re.findall(r'<tr data-key="([^"]+)"><td class="key">[^<]*</td><td><pre>'
                             r'([^<]*)</pre>', inbox))
        assert kv == {"last": "&#34;message 2&#34;", "taken": "2"}
        assert '<dd id="unread">0</dd>' in inbox
        stats = await client.get_orchestration_stats("inbox-1")
        assert stats is not None and stats.execution_count == 3
        past = (await ui.get("/instance", params={"id": "inbox-1", "execution": "1"})).text
        assert 'id="execution-1"' in past and "message on inbox" in past
        assert "message 1" in past and "(past)" in past
        assert (await ui.get("/instance", params={"id": "inbox-1", "execution": "9"})
                ).status_code == 404
        assert (await ui.get("/instance", params={"id": "inbox-1", "execution": "x"})
                ).status_code == 400

        running = (await ui.get("/instance", params={"id": "order-3"})).text
        assert 'data-refresh="2.0"' in running and "waiting" in running
        assert 'id="cancel"' in running and 'id="enqueue"' in running
        assert '<dd id="custom-status-version">1</dd>' in running
        failed = (await ui.get("/instance", params={"id": "order-2"})).text
        assert "cannot charge -1" in failed
        missing = await ui.get("/instance", params={"id": "nope"})
        assert missing.status_code == 404
        workers = (await ui.get("/workers", params={"all": "1"})).text
        assert "data-worker=" in workers


async def test_instance_page_bounds_say_what_they_leave_out(
        store: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_instance, "EXECUTIONS_SHOWN", 2)
    monkeypatch.setattr(_instance, "TREE_SHOWN", 1)
    monkeypatch.setattr(_instance, "KV_VALUE_CHARS", 4)
    async with http(store) as ui:
        inbox = (await ui.get("/instance", params={"id": "inbox-1"})).text
        assert re.findall(r'<tr data-execution="(\d+)"', inbox) == ["3", "2"]
        assert "1 older execution not listed" in inbox and 'id="open-execution"' in inbox
        assert '<tr data-key="last"><td class="key">last</td><td><pre>&#34;mes…</pre>' in inbox
        order = (await ui.get("/instance", params={"id": "order-1"})).text
        assert 'id="tree-cut"' in order and len(re.findall(r"<li[ >]", order)) == 1


# ====================================================================== actions
async def test_enqueue_needs_the_token_and_reaches_the_instance(store: Provider) -> None:
    client = Client(store)

    async def unread() -> int:
        stats = await client.get_orchestration_stats("order-3")
        assert stats is not None
        return stats.queue_pending_count

    async with http(store, token=TOKEN) as ui:
        form = {"instance_id": "order-3", "queue": "notes", "data": '{"n": 1}'}
        assert (await ui.post("/actions/enqueue", data=form)).status_code == 401
        wrong = await ui.post("/actions/enqueue", data=form,
                              headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
            refused = await ui.post("/actions/enqueue", data=form, headers={**AUTH, **headers})
            assert refused.status_code == 403
        assert await unread() == 0
        not_json = await ui.post("/actions/enqueue", data={**form, "data": "{oops"},
                                 headers=AUTH)
        assert not_json.status_code == 400 and "not JSON" in not_json.text
        nameless = await ui.post("/actions/enqueue", data={**form, "queue": ""}, headers=AUTH)
        assert nameless.status_code == 400
        unknown = await ui.post("/actions/enqueue", data={**form, "instance_id": "nope"},
                                headers=AUTH)
        assert unknown.status_code == 404
        assert await unread() == 0
        done = await ui.post("/actions/enqueue", data=form,
                             headers={**AUTH, "origin": ORIGIN, "sec-fetch-site": "same-origin"})
        assert done.status_code == 303 and "enqueued" in done.headers["location"]
        assert await unread() == 1
        page = (await ui.get(done.headers["location"], headers=AUTH)).text
        assert "enqueued on &#39;notes&#39;" in page and '<dd id="unread">1</dd>' in page

        # With a runtime, the instance takes what the dashboard enqueues.
        acts, orchs = uikit.registries()
        async with await Runtime.start(store, acts, orchs):
            status = await client.get_orchestration_status("inbox-1")
            sent = await ui.post("/actions/enqueue", headers=AUTH, data={
                "instance_id": "inbox-1", "queue": "inbox", "data": '"hello"'})
            assert sent.status_code == 303
            status = await client.wait_for_status_change(
                "inbox-1", status.custom_status_version, 30)
        assert status.custom_status == {"taken": uikit.INBOX_TAKEN + 1}
        page = (await ui.get("/instance", params={"id": "inbox-1"}, headers=AUTH)).text
        assert '<tr data-key="last"><td class="key">last</td><td><pre>&#34;hello&#34;' in page
        assert re.findall(r'<tr data-execution="(\d+)"', page)[0] == "4"


async def test_read_only_serves_no_action_at_all(template: Path, tmp_path: Path) -> None:
    path = copy_store(template, tmp_path / "ro.db")
    provider = connect(f"sqlite:///{path}", read_only=True)
    try:
        async with http(provider, read_only=True) as ui:
            for iid in ("order-3", "inbox-1", "order-1"):
                page = (await ui.get("/instance", params={"id": iid})).text
                assert '<form method="post"' not in page and 'id="actions"' not in page
                assert 'id="kv"' in page and 'id="executions"' in page
            assert len(rows((await ui.get("/instances")).text)) == 50
            for action in ("cancel", "delete", "raise-event", "enqueue"):
                response = await ui.post(f"/actions/{action}", data={
                    "instance_id": "order-3", "queue": "q", "event_name": "e"})
                assert response.status_code == 404
        client = Client(provider)
        assert (await client.get_orchestration_status("order-3")).state is \
            OrchestrationState.RUNNING
        stats = await client.get_orchestration_stats("order-3")
        assert stats is not None and stats.queue_pending_count == 0
    finally:
        await provider.close()


async def test_the_token_guards_every_request(store: Provider) -> None:
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
        done = await ui.post("/actions/delete", data={"instance_id": "bulk-00"}, headers=AUTH)
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


async def test_actions_refuse_cross_site_requests(store: Provider) -> None:
    client = Client(store)
    async with http(store, token=TOKEN) as ui:
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"},
                        {"sec-fetch-site": "same-site"}, {"origin": "null"}):
            for action in ("cancel", "raise-event", "enqueue", "delete"):
                response = await ui.post(f"/actions/{action}", data={
                    "instance_id": "order-3", "event_name": "e", "queue": "q",
                    "force": "on"}, headers={**AUTH, **headers})
                assert response.status_code == 403, (action, headers)
        same = await ui.post("/actions/raise-event",
                             data={"instance_id": "order-3", "event_name": "ping",
                                   "data": '{"n": 1}'},
                             headers={**AUTH, "origin": ORIGIN, "sec-fetch-site": "same-origin"})
        assert same.status_code == 303 and "raised" in same.headers["location"]
        not_json = await ui.post("/actions/raise-event",
                                 data={"instance_id": "order-3", "event_name": "x",
                                       "data": "{oops"}, headers=AUTH)
        assert not_json.status_code == 400
    assert (await client.get_orchestration_status("order-3")).state is \
        OrchestrationState.RUNNING
    stats = await client.get_orchestration_stats("order-3")
    assert stats is not None and stats.queue_pending_count == 1  # the one raised


# ====================================================================== the command
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


@pytest.fixture
def served(template: Path, tmp_path: Path) -> Iterator[uikit.UiProcess]:
    path = copy_store(template, tmp_path / "s.db")
    # the token from the environment
    ui = uikit.UiProcess(f"sqlite:///{path}", log=tmp_path / "ui.log",
                         env={"DUROXY_UI_TOKEN": TOKEN})
    try:
        ui.wait_up()
        yield ui
    finally:
        ui.stop()


def test_ui_serves_its_pages_from_the_command(served: uikit.UiProcess) -> None:
    plain = httpx.get(served.url + "/instances")
    assert plain.status_code == 401
    page = httpx.get(served.url + "/instances", headers=AUTH)
    assert page.status_code == 200 and len(rows(page.text)) == 50
    instance = httpx.get(served.url + "/instance", params={"id": "inbox-1"}, headers=AUTH)
    assert instance.status_code == 200 and 'id="enqueue"' in instance.text
    served.stop()
    assert "127.0.0.1" in served.log.read_text()


def test_screenshots_are_referenced_by_the_docs() -> None:
    """The browser tests write the screenshots that docs/dashboard.md shows."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    text = (docs / "dashboard.md").read_text()
    for name in ("ui-instances.png", "ui-instance.png"):
        assert f"images/{name}" in text
        assert (docs / "images" / name).is_file()

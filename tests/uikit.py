"""A store with known instances for the dashboard's tests, and ``duroxy ui`` run as a
process on it.

``populate(provider)`` runs a runtime until these are in place, then stops it:

* ``order-1``: COMPLETED, with two activities, a timer and a child ``order-1::sub::*``
  that ran an activity itself; its KV holds ``sku`` and ``charged``;
* ``order-2``: FAILED (an activity that raised);
* ``order-3``: RUNNING, waiting for the event ``approve`` (custom status ``waiting``);
* ``inbox-1``: RUNNING in its third execution, waiting on queue ``inbox``: each
  message it takes goes to its KV (``last``, and ``taken``, the count) and ends the
  execution with continue-as-new (``"bye"`` completes it instead); two were taken;
* ``bulk-00`` ... ``bulk-59``: COMPLETED, one turn each (more than a page of 50).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
)
from duroxy.providers.base import Provider

BULK = 60


async def reserve(ctx: ActivityContext, sku: str) -> dict[str, Any]:
    return {"sku": sku, "reserved": True}


async def charge(ctx: ActivityContext, amount: float) -> str:
    if amount < 0:
        raise ValueError(f"cannot charge {amount}")
    return f"charged {amount:.2f}"


async def ship(ctx: OrchestrationContext, sku: str) -> str:
    await ctx.schedule_activity("reserve", sku)
    return f"shipped {sku}"


async def order(ctx: OrchestrationContext, spec: dict[str, Any]) -> dict[str, Any]:
    ctx.set_kv_value("sku", spec["sku"])
    reserved = await ctx.schedule_activity("reserve", spec["sku"])
    await ctx.schedule_timer(0.05)
    charged = await ctx.schedule_activity("charge", spec["amount"])
    ctx.set_kv_value("charged", charged)
    shipped = await ctx.schedule_sub_orchestration("ship", spec["sku"])
    if spec.get("wait"):
        ctx.set_custom_status("waiting")
        await ctx.schedule_wait("approve")
    return {"reserved": reserved, "charged": charged, "shipped": shipped}


async def quick(ctx: OrchestrationContext, n: int) -> int:
    return n * 2


async def inbox(ctx: OrchestrationContext, taken: int) -> int:
    ctx.set_custom_status({"taken": taken})
    message = await ctx.dequeue_event("inbox")
    ctx.set_kv_value("last", message)
    ctx.set_kv_value("taken", taken + 1)
    if message == "bye":
        return taken + 1
    ctx.continue_as_new(taken + 1)


INBOX_TAKEN = 2


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder().register("reserve", reserve).register("charge", charge)
    orchs = (OrchestrationRegistry.builder().register("order", order).register("ship", ship)
             .register("quick", quick).register("inbox", inbox))
    return acts.build(), orchs.build()


async def populate(provider: Provider) -> None:
    client = Client(provider)
    acts, orchs = registries()
    async with await Runtime.start(provider, acts, orchs):
        await client.start_orchestration("order-1", "order", {"sku": "A-1", "amount": 12.5})
        await client.start_orchestration("order-2", "order", {"sku": "B-2", "amount": -1})
        await client.start_orchestration("order-3", "order",
                                         {"sku": "C-3", "amount": 3, "wait": True})
        await client.start_orchestration("inbox-1", "inbox", 0)
        for n in range(INBOX_TAKEN):
            await client.enqueue_event("inbox-1", "inbox", f"message {n + 1}")
        for i in range(BULK):
            await client.start_orchestration(f"bulk-{i:02d}", "quick", i)
        for iid in ("order-1", "order-2", *(f"bulk-{i:02d}" for i in range(BULK))):
            await client.wait_for_orchestration(iid, 30)
        deadline = time.monotonic() + 30
        while (await client.get_orchestration_status("order-3")).custom_status != "waiting":
            assert time.monotonic() < deadline, "order-3 never got to its wait"
            await asyncio.sleep(0.05)
        # inbox-1's third execution has begun (its custom status is set on its first turn)
        status = await client.get_orchestration_status("inbox-1")
        while status.custom_status != {"taken": INBOX_TAKEN}:
            status = await client.wait_for_status_change(
                "inbox-1", status.custom_status_version, max(deadline - time.monotonic(), 0))
    assert (await client.get_orchestration_status("order-1")).state is \
        OrchestrationState.COMPLETED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class UiProcess:
    """``duroxy ui`` on a store, in a process of its own."""

    def __init__(self, store_url: str, *args: str, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = dict(os.environ)
        full_env.pop("DUROXY_UI_TOKEN", None)
        full_env.update(env or {})
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "duroxy", "ui", "--store", store_url,
                 "--port", str(self.port), *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env)

    def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"duroxy ui exited: {self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/static/style.css", timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"duroxy ui did not start: {self.log.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

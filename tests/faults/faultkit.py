"""Helpers of the fault-injection suite: side effects counted outside the store, an
application whose activities record the keys they were called with, and waits that
ride out a store that fails for a while."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationStatus,
)
from duroxy.errors import ProviderError
from duroxy.history import GuidRecorded, HistoryEvent


class Effects:
    """Activity executions, one JSON line each in a file outside the store: what a test
    counts to see how often an activity's body really ran. One ``write`` on an
    ``O_APPEND`` descriptor per line, so several writers (threads, processes) never
    interleave within a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, ctx: ActivityContext, key: Any) -> None:
        line = json.dumps({"iid": ctx.instance_id, "act": ctx.activity_name, "key": key,
                           "pid": os.getpid(), "t": time.time()}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def keys_by_instance(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in self.read():
            out.setdefault(r["iid"], set()).add(r["key"])
        return out

    def counts(self) -> Counter[tuple[str, str, Any]]:
        return Counter((r["iid"], r["act"], r["key"]) for r in self.read())


# ---------------------------------------------------------------- the keyed application
def receipt(key: str) -> str:
    return f"charged:{key}"


def keyed_app(effects: Effects) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """``pay`` (input ``{"n": n}``): two steps, each drawing an idempotency key with
    ``ctx.new_guid()`` and passing it to ``charge``, which records the key it was called
    with (the side effect) and returns a receipt naming it. Its output is
    ``{"n": n, "receipts": [...]}``.

    The promise under test: a key an activity received is a key the instance's history
    recorded, so a charge made under it is one the workflow knows of."""

    async def charge(ctx: ActivityContext, inp: dict[str, Any]) -> str:
        effects.record(ctx, inp["key"])
        await asyncio.sleep(0)
        return receipt(inp["key"])

    async def pay(ctx: OrchestrationContext, inp: dict[str, Any]) -> dict[str, Any]:
        n = inp["n"]  # "pad", when given, only makes the start bigger
        receipts = []
        for step in range(2):
            key = await ctx.new_guid()
            receipts.append(await ctx.schedule_activity(
                "charge", {"key": key, "n": n, "step": step}))
        return {"n": n, "receipts": receipts}

    acts = ActivityRegistry.builder().register("charge", charge).build()
    orchs = OrchestrationRegistry.builder().register("pay", pay).build()
    return acts, orchs


def recorded_guids(history: Iterable[HistoryEvent]) -> list[str]:
    return [e.value for e in history if isinstance(e, GuidRecorded)]


def check_keyed_outcome(iid: str, n: int, status: OrchestrationStatus,
                        history: list[HistoryEvent]) -> None:
    """A ``pay`` instance completed once, with the receipts of the keys its history
    recorded (and only those)."""
    assert status.state.value == "COMPLETED", (iid, status.state, status.error)
    guids = recorded_guids(history)
    assert len(guids) == 2, (iid, guids)
    assert status.output == {"n": n, "receipts": [receipt(k) for k in guids]}, iid
    assert [e.kind for e in history].count("OrchestrationCompleted") == 1, iid


# ---------------------------------------------------------------- waiting through faults
async def retrying(call: Any, *args: Any, timeout: float = 30.0, **kw: Any) -> Any:
    """``await call(*args, **kw)``, tried again while the store answers with a
    retryable ``ProviderError`` (it is being cut off or restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call(*args, **kw)
        except ProviderError as e:
            if not e.retryable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def wait_all(client: Client, ids: Iterable[str], timeout: float
                   ) -> dict[str, OrchestrationStatus]:
    """Every instance's status once terminal; a store failing for a while is waited out.
    Fails naming the instances still running when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    out: dict[str, OrchestrationStatus] = {}
    for iid in ids:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pending = [i for i in ids if i not in out]
                raise AssertionError(f"not finished after {timeout} s: {pending[:10]} "
                                     f"({len(pending)} in all)")
            try:
                out[iid] = await client.wait_for_orchestration(iid, min(left, 5.0))
                break
            except TimeoutError:
                continue
            except ProviderError as e:
                if not e.retryable:
                    raise
                await asyncio.sleep(0.1)
    return out


async def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Until ``pred()`` (a function, or one returning an awaitable) is true."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)

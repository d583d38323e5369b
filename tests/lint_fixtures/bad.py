"""Orchestrations that break each determinism rule once (the lint tests read this file;
nothing here runs). The line of each finding is marked with its rule."""

# ruff: noqa
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time as t
import uuid
from datetime import date, datetime
from pathlib import Path

from duroxy import OrchestrationContext, OrchestrationRegistry


async def clocks(ctx: OrchestrationContext, _: object) -> object:
    a = t.time()  # DUR001
    b = datetime.now()  # DUR001
    c = dt.datetime.utcnow()  # DUR001
    d = date.today()  # DUR001
    e = t.monotonic()  # duroxy: ignore[DUR001]
    f = t.perf_counter()  # duroxy: ignore
    return [a, b, c, d, e, f]


async def chance(ctx: OrchestrationContext, _: object) -> object:
    x = random.random()  # DUR002
    rng = random.Random()  # DUR002
    seeded = random.Random(await ctx.new_guid())
    token = secrets.token_hex(8)  # DUR002
    raw = os.urandom(4)  # DUR002
    u = uuid.uuid4()  # DUR003
    v = uuid.uuid1()  # DUR003
    return [x, rng, seeded.random(), token, raw, u, v]


async def environment(ctx: OrchestrationContext, _: object) -> object:
    home = os.environ["HOME"]  # DUR004
    user = os.getenv("USER")  # DUR004
    return [home, user, sys.argv, os.getpid()]  # DUR004 DUR004


async def io(ctx: OrchestrationContext, _: object) -> object:
    with open("/etc/hostname") as fh:  # DUR005
        name = fh.read()
    text = Path("/etc/hosts").read_text()  # DUR005
    s = socket.socket()  # DUR005
    out = subprocess.run(["true"])  # DUR005
    return [name, text, s, out]


async def blocking(ctx: OrchestrationContext, _: object) -> None:
    t.sleep(1)  # DUR006


async def threads(ctx: OrchestrationContext, _: object) -> None:
    threading.Thread(target=print).start()  # DUR007
    concurrent.futures.ThreadPoolExecutor()  # DUR007
    await asyncio.get_running_loop().run_in_executor(None, print)  # DUR007
    await asyncio.to_thread(print)  # DUR007


async def sets(ctx: OrchestrationContext, names: list[str]) -> object:
    for name in set(names):  # DUR008
        await ctx.schedule_activity("work", name)
    futures = [ctx.schedule_activity("work", n) for n in {"a", "b"}]  # DUR008
    done, pending = await asyncio.wait(futures)
    for fut in done:  # DUR008
        await ctx.schedule_activity("more", fut.result())
    total = sum(len(n) for n in set(names))  # iterating a set to compute: fine
    for name in sorted(set(names)):  # sorted: fine
        await ctx.schedule_activity("work", name)
    return total


def _helper() -> float:
    return t.time()  # DUR001 (through a helper)


async def through_a_helper(ctx: OrchestrationContext, _: object) -> float:
    nested = lambda: random.choice([1, 2])  # DUR002
    return _helper() + nested()


async def clean(ctx: OrchestrationContext, _: object) -> object:
    now = await ctx.utcnow()
    await asyncio.sleep(1)
    return now


def an_activity(ctx: object, _: object) -> float:
    return t.time()  # activities are never checked


registry = OrchestrationRegistry.builder().register("registered::clean", clean).build()

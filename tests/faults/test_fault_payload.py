"""Big things: 10 MB payloads (an input, an activity's output, an event's data) round-trip
exactly on every store; a payload over the documented limit
(``duroxy.codec.MAX_PAYLOAD_BYTES``, 16 MiB) is refused with ``PayloadError`` before
anything is stored, wherever it is made; and a history of 100,000 events replays cold on
a fresh runtime. Nothing hangs: each test has its own timeout."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faultkit import wait_until

from duroxy import (
    ActivityContext,
    ActivityFailed,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    Runtime,
    _limits,
    codec,
)
from duroxy.errors import PayloadError
from duroxy.history import (
    EventRaised,
    GuidRecorded,
    OrchestrationStarted,
    UtcNowRecorded,
    encode_event,
)
from duroxy.providers.base import Provider

MB = 1024 * 1024


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[Callable[[], Provider]]:
    """Opens the store of the test (again, for a cold start: a new provider object on the
    same data, except in memory where the provider is the data); closes them after."""
    opened: list[Provider] = []
    if request.param == "memory":
        from duroxy.providers.memory import InMemoryProvider

        only = InMemoryProvider()

        def make() -> Provider:
            return only
    elif request.param == "sqlite":
        from duroxy.providers.sqlite import SqliteProvider

        def make() -> Provider:
            return SqliteProvider(tmp_path / "big.db")
    else:
        from duroxy.providers.postgres import PostgresProvider

        dsn, schema = request.getfixturevalue("dsn"), request.getfixturevalue("schemas")()

        def make() -> Provider:
            return PostgresProvider(dsn, schema)

    def opener() -> Provider:
        opened.append(make())
        return opened[-1]

    yield opener
    for p in opened:
        await p.close()


def digest(value: Any) -> str:
    return hashlib.sha256(codec.encode(value).encode()).hexdigest()


# ====================================================================== 10 MB payloads
def bulk(tag: str, size: int = 10 * MB) -> dict[str, Any]:
    """About ``size`` bytes of JSON holding what an encoder must get right: quotes,
    backslashes, control characters, non-ASCII text and astral characters, numbers."""
    unit = f'{tag} "q" \\ b\n\t\x01 é 日本 🙂 '
    numbers = list(range(size // 64))
    reps = (size - len(codec.encode(numbers))) // len(unit.encode()) + 1
    value = {"text": unit * reps, "numbers": numbers}
    assert len(codec.encode(value).encode()) >= size
    return value


def mirror(value: dict[str, Any]) -> dict[str, Any]:
    return {"text": value["text"][::-1], "numbers": value["numbers"][::-1]}


async def mirror_activity(ctx: ActivityContext, value: dict[str, Any]) -> dict[str, Any]:
    return mirror(value)


async def bulky(ctx: OrchestrationContext, value: dict[str, Any]) -> dict[str, Any]:
    mirrored = await ctx.schedule_activity("mirror", value)
    event = await ctx.schedule_wait("bulk")
    return {"mirrored": mirrored, "input": digest(value), "event": digest(event)}


BULKY = (ActivityRegistry.builder().register("mirror", mirror_activity).build(),
         OrchestrationRegistry.builder().register("bulky", bulky).build())


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_ten_megabyte_payloads_round_trip_exactly(
        stores: Callable[[], Provider]) -> None:
    store = stores()
    client = Client(store)
    value, event = bulk("input"), bulk("event")
    async with await Runtime.start(store, *BULKY):
        await client.start_orchestration("bulky", "bulky", value)
        await client.raise_event("bulky", "bulk", event)
        st = await client.wait_for_orchestration("bulky", 90)
    assert st.state is OrchestrationState.COMPLETED, st.error
    # The activity got the input exactly (its output is computed from it), the
    # orchestration saw the input and the event exactly, the client reads all back.
    assert st.output == {"mirrored": mirror(value), "input": digest(value),
                         "event": digest(event)}
    history = await client.read_history("bulky")
    started = next(e for e in history if isinstance(e, OrchestrationStarted))
    raised = next(e for e in history if isinstance(e, EventRaised))
    assert codec.decode(started.input) == value
    assert codec.decode(raised.data) == event


# ====================================================================== over the limit
async def big_output(ctx: ActivityContext, size: int) -> str:
    return "x" * size


async def oversized(ctx: OrchestrationContext, size: int) -> list[str]:
    """Every place an orchestration makes a payload, each too big: what it sees."""
    seen = []
    try:
        await ctx.schedule_activity("big_output", size)
    except ActivityFailed as e:  # the activity's result was refused where it ran
        seen.append(f"activity output: {e.message}")
    try:
        await ctx.schedule_activity("big_output", "y" * size)
    except PayloadError as e:  # refused when scheduled: never recorded
        seen.append(f"activity input: {e}")
    try:
        ctx.set_custom_status("z" * size)
    except PayloadError as e:
        seen.append(f"custom status: {e}")
    return seen


OVERSIZED = (ActivityRegistry.builder().register("big_output", big_output).build(),
             OrchestrationRegistry.builder().register("oversized", oversized).build())


def test_the_payload_limit_counts_utf8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_limits, "MAX_PAYLOAD_BYTES", 1000)
    assert len(codec.encode("a" * 998)) == 1000  # with its quotes: exactly the limit
    with pytest.raises(PayloadError, match="1,001 bytes of JSON, over the 1,000-byte"):
        codec.encode("a" * 999)
    with pytest.raises(PayloadError, match=r"value at input is 1,002 bytes"):
        codec.encode("é" * 500, path="input")  # 500 characters, 1,000 bytes
    assert codec.encode(["é" * 250]) == '["' + "é" * 250 + '"]'


@pytest.mark.timeout(60)
async def test_a_payload_over_the_limit_is_refused_wherever_it_is_made(
        stores: Callable[[], Provider], monkeypatch: pytest.MonkeyPatch) -> None:
    # The limit as documented, lowered so that the test handles small values; each
    # value below is just over it.
    limit = MB
    monkeypatch.setattr(_limits, "MAX_PAYLOAD_BYTES", limit)
    store = stores()
    client = Client(store)
    with pytest.raises(PayloadError, match="payload limit"):
        await client.start_orchestration("too-big", "oversized", "s" * limit)
    assert (await client.get_orchestration_status("too-big")).state \
        is OrchestrationState.NOT_FOUND
    async with await Runtime.start(store, *OVERSIZED):
        await client.start_orchestration("oversized", "oversized", limit)
        with pytest.raises(PayloadError, match="payload limit"):
            await client.raise_event("oversized", "bulk", "e" * limit)
        st = await client.wait_for_orchestration("oversized", 30)
    assert st.state is OrchestrationState.COMPLETED, st.error
    assert [s.split(":")[0] for s in st.output] == [
        "activity output", "activity input", "custom status"]
    assert all("over the 1,048,576-byte payload limit" in s for s in st.output), st.output
    # Nothing over the limit was stored.
    history = await client.read_history("oversized")
    assert max(len(encode_event(e).encode()) for e in history) < limit


# ====================================================================== 100,000 events
EVENTS = 100_000


async def many_steps(ctx: OrchestrationContext, n: int) -> str:
    """``n`` recorded values (a GUID and the time, in turn), then a wait: its history
    holds ``n`` events beyond its start and end. The output digests every value seen,
    so a replay that did not use the recorded values gives another output."""
    h = hashlib.sha256()
    for k in range(n):
        value = await ctx.new_guid() if k % 2 == 0 else (await ctx.utcnow()).isoformat()
        h.update(value.encode())
    await ctx.schedule_wait("go")
    return h.hexdigest()


MANY = (ActivityRegistry.builder().build(),
        OrchestrationRegistry.builder().register("many", many_steps).build())


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_history_of_100000_events_replays_cold(stores: Callable[[], Provider]
                                                      ) -> None:
    store = stores()
    client = Client(store)
    async with await Runtime.start(store, *MANY):
        await client.start_orchestration("many", "many", EVENTS)

        async def recorded() -> bool:
            rec = await store.get_instance("many")
            return rec is not None and rec.history_len >= EVENTS

        await wait_until(recorded, 120, "the first turn to record its 100,000 events")
    # A fresh runtime (on a fresh provider object where the store outlives one) has
    # nothing cached: the event makes it replay all 100,000 events from the store.
    store = stores()
    client = Client(store)
    async with await Runtime.start(store, *MANY):
        await client.raise_event("many", "go")
        st = await client.wait_for_orchestration("many", 120)
    assert st.state is OrchestrationState.COMPLETED, st.error
    history = await client.read_history("many")
    assert len(history) >= EVENTS + 3
    h = hashlib.sha256()
    for e in history:
        if isinstance(e, GuidRecorded):
            h.update(e.value.encode())
        elif isinstance(e, UtcNowRecorded):
            h.update(datetime.fromtimestamp(e.value_us / 1_000_000, UTC).isoformat().encode())
    assert st.output == h.hexdigest()

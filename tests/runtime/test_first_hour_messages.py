"""The messages a new user meets in the first hour, in-process: each names what happened
and what to do. (The command line's share is in test_cli_first_hour.py.)

- an activity or orchestration that no running worker registered: a WARNING at once,
  with the closest registered names and the workers that lack it, and a final error that
  says what was tried;
- a plain ``def`` orchestration: refused at ``register()``;
- a durable future returned or passed without ``await``: "did you forget `await`?";
- nondeterminism: the usual causes, and ``ctx.utcnow()`` / ``ctx.new_guid()``;
- store passwords: masked wherever duroxy shows a URL or DSN.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityRegistry,
    Client,
    OrchestrationContext,
    OrchestrationRegistry,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
)
from duroxy._redact import redact
from duroxy.cli._commands import _Formatter
from duroxy.providers.memory import InMemoryProvider
from enginekit import Driver

Ctx = OrchestrationContext


async def greet(ctx: ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


async def hello(ctx: Ctx, name: str) -> str:
    return str(await ctx.schedule_activity("greet", name))


async def typo_activity(ctx: Ctx, name: str) -> str:
    return str(await ctx.schedule_activity("gret", name))


async def typo_child(ctx: Ctx, name: str) -> str:
    return str(await ctx.schedule_sub_orchestration("helo", name))


ACTIVITIES = ActivityRegistry.builder().register("greet", greet).build()
ORCHESTRATIONS = (OrchestrationRegistry.builder().register("hello", hello)
                  .register("typo_activity", typo_activity)
                  .register("typo_child", typo_child).build())


@pytest.fixture
async def store() -> AsyncIterator[InMemoryProvider]:
    provider = InMemoryProvider()
    try:
        yield provider
    finally:
        await provider.close()


def _options(worker_id: str, **kw: Any) -> RuntimeOptions:
    return RuntimeOptions(worker_id=worker_id, poll_interval=0.01, max_poll_interval=0.02,
                          **kw)


async def _first_warning(caplog: pytest.LogCaptureFixture, needle: str) -> str:
    """The first WARNING of duroxy.runtime containing ``needle`` (waits for it)."""
    for _ in range(1000):
        for record in caplog.records:
            if record.levelno == logging.WARNING and needle in record.getMessage():
                return record.getMessage()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no warning mentioning {needle!r}: "
                         f"{[r.getMessage() for r in caplog.records]}")


# ====================================================================== 1. not registered
@pytest.mark.parametrize("orchestration, missing, meant", [
    ("typo_activity", "activity 'gret'", "did you mean 'greet'?"),
    ("typo_child", "orchestration 'helo'", "did you mean 'hello'?"),
])
async def test_work_no_worker_has_is_warned_about_at_once(
        store: InMemoryProvider, caplog: pytest.LogCaptureFixture, orchestration: str,
        missing: str, meant: str) -> None:
    caplog.set_level(logging.WARNING, logger="duroxy.runtime")
    # A backoff of a minute: the warning must come with the first offer, not after it.
    opts = {"not_registered_backoff": 60.0}
    async with (await Runtime.start(store, ACTIVITIES, ORCHESTRATIONS, _options("w1", **opts)),
                await Runtime.start(store, ACTIVITIES, ORCHESTRATIONS, _options("w2", **opts))):
        client = Client(store)
        await client.start_orchestration("i1", orchestration, "Ada")
        message = await _first_warning(caplog, missing)
        status = await client.get_orchestration_status("i1")
        assert not status.is_terminal  # warned at the first offer, while it waits
    assert f"{missing} is not registered on any running worker ({meant})" in message
    # Both live workers are named as lacking it, the one that met it first as "this one".
    assert "(this one)" in message and "w1" in message and "w2" in message
    assert "after 10 attempts" in message and "every 60 s" in message
    warnings = [r for r in caplog.records if missing in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_the_final_not_registered_error_says_what_was_tried(
        store: InMemoryProvider) -> None:
    opts = _options("w1", max_attempts=3, not_registered_backoff=0.01)
    async with await Runtime.start(store, ACTIVITIES, ORCHESTRATIONS, opts):
        client = Client(store)
        await client.start_orchestration("i1", "typo_activity", "Ada")
        status = await client.wait_for_orchestration("i1", 30)
    assert status.error is not None and status.error.kind == "not_registered"
    message = status.error.message
    assert "failed after 1 attempt" not in message  # it never ran: no attempt to count
    assert message.startswith("activity 'gret' could not run (not_registered): "
                              "NotRegistered: activity 'gret' is not registered on any "
                              "running worker (did you mean 'greet'?)"), message
    assert "offered 3 times, 0.01 s apart" in message and "w1 (this one)" in message


# ====================================================================== 3. plain def
def test_a_plain_def_orchestration_is_refused_at_register() -> None:
    def not_async(ctx: Ctx, x: Any) -> str:
        return "value"

    builder = OrchestrationRegistry.builder()
    with pytest.raises(TypeError, match=r"'orch': .*not_async is a plain function, not an "
                       r"async def"):
        builder.register("orch", not_async)
    with pytest.raises(TypeError, match="not_async"):
        builder.register(not_async)
    with pytest.raises(TypeError, match="not_async"):
        builder.register_versioned("orch", "2.0.0", not_async)
    with pytest.raises(TypeError, match="not_async"):
        builder.orchestration("orch")(not_async)
    with pytest.raises(TypeError, match="not_async"):
        builder.register("orch", functools.partial(not_async))
    assert len(builder.build()) == 0  # nothing of it was registered


def test_every_async_callable_is_still_accepted() -> None:
    async def with_extra(ctx: Ctx, x: Any, suffix: str) -> str:
        return f"{x}{suffix}"

    class Callable:
        async def __call__(self, ctx: Ctx, x: Any) -> Any:
            return x

    registry = (OrchestrationRegistry.builder()
                .register("fn", hello)
                .register("partial", functools.partial(with_extra, suffix="!"))
                .register("object", Callable())
                .register_versioned("fn", "2.0.0", hello)
                .build())
    assert registry.names() == ["fn", "object", "partial"]
    # Activities may still be plain functions (they run on a thread pool).
    assert len(ActivityRegistry.builder().register("sync", lambda ctx, x: x).build()) == 1


# ====================================================================== 4. no await
async def _returns_unawaited(ctx: Ctx, x: Any) -> Any:
    return ctx.schedule_activity("greet", x)


async def _passes_unawaited(ctx: Ctx, x: Any) -> Any:
    return await ctx.schedule_activity("greet", ctx.schedule_activity("greet", x))


async def _returns_unawaited_retry(ctx: Ctx, x: Any) -> Any:
    return {"results": [ctx.schedule_activity_with_retry("greet", x, RetryPolicy(2))]}


async def _status_unawaited_now(ctx: Ctx, x: Any) -> Any:
    ctx.set_custom_status({"at": ctx.utcnow()})


async def _returns_unawaited_child(ctx: Ctx, x: Any) -> Any:
    return ctx.schedule_sub_orchestration("child", x)


@pytest.mark.parametrize("fn, call, where", [
    (_returns_unawaited, "ctx.schedule_activity('greet')", "the output"),
    (_passes_unawaited, "ctx.schedule_activity('greet')", ""),
    (_returns_unawaited_retry, "ctx.schedule_activity_with_retry('greet') at .results[0]",
     "the output"),
    (_status_unawaited_now, "ctx.utcnow() at .at", ""),
    (_returns_unawaited_child, "ctx.schedule_sub_orchestration('child')", "the output"),
])
def test_an_unawaited_future_asks_did_you_forget_await(fn: Any, call: str, where: str
                                                        ) -> None:
    d = Driver(fn, activities={"greet": lambda x: x})
    d.start("Ada")
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed"
    message: str = last.message  # type: ignore[attr-defined]
    assert f"cannot encode the un-awaited {call}: did you forget `await`?" in message, message
    assert "cannot encode value of type" not in message
    if where:
        assert message.startswith(f"cannot encode {where}: ")


# ====================================================================== 5. nondeterminism
def test_nondeterminism_names_the_usual_causes_and_the_deterministic_calls() -> None:
    # The first run reads a value that the replay reads differently, as datetime.now()
    # or random.random() would: a counter stands in for them.
    reads = itertools.count()

    async def reads_the_clock(ctx: Ctx, x: Any) -> Any:
        name = "greet" if next(reads) == 0 else "wave"
        return await ctx.schedule_activity(name, x)

    d = Driver(reads_the_clock, check_cold=False, activities={"greet": lambda x: x})
    d.start("Ada")
    (scheduled,) = d.pending()
    d.execution = None  # the cache is gone (a restart, another worker): replay
    d.turn([d.complete(scheduled)])
    last = d.history[-1]
    assert last.kind == "OrchestrationFailed"
    assert last.error_kind == "nondeterminism"  # type: ignore[attr-defined]
    message: str = last.message  # type: ignore[attr-defined]
    assert "expected activity 'greet' at event 2, code scheduled activity 'wave'" in message
    for cause in ("wall-clock time", "datetime.now()", "random numbers", "uuid.uuid4()",
                  "environment variables", "iteration order of a set",
                  "`await ctx.utcnow()`", "`await ctx.new_guid()`", "new version"):
        assert cause in message, (cause, message)


# ====================================================================== 7. secrets
@pytest.mark.parametrize("text, shown", [
    ("postgresql://app:s3cret@db:5432/prod?schema=x", "postgresql://app:***@db:5432/prod?schema=x"),
    ("postgres://app:p@ss@db/prod", "postgres://app:***@db/prod"),
    ("postgresql://app@db/prod", "postgresql://app@db/prod"),
    ("postgresql://db:5432/prod", "postgresql://db:5432/prod"),
    ("postgresql://app@db/prod?password=s3cret&sslmode=require",
     "postgresql://app@db/prod?password=***&sslmode=require"),
    ("host=db user=app password=s3cret dbname=prod", "host=db user=app password=*** dbname=prod"),
    ("host=db password = 'with space' dbname=prod", "host=db password = *** dbname=prod"),
    ("failed: host=db sslpassword=s3cret", "failed: host=db sslpassword=***"),
    ("sqlite:///app.db", "sqlite:///app.db"),
])
def test_redact_masks_passwords_in_urls_and_dsns(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_worker_log_lines_are_masked() -> None:
    record = logging.LogRecord("duroxy.runtime", logging.WARNING, __file__, 1,
                               "writing the heartbeat failed (%s)",
                               ("connection to postgresql://app:s3cret@db/prod lost",), None)
    line = _Formatter("%(levelname)s %(message)s").format(record)
    assert "s3cret" not in line and "postgresql://app:***@db/prod" in line

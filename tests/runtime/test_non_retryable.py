"""Non-retryable errors (API.md section 11): ``NonRetryableError`` raised by an activity,
``RetryPolicy(non_retryable=...)`` matched by exact name, ``ActivityFailed.retryable``,
and the decision recorded in history so that replay reproduces it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from duroxy import (
    ActivityContext,
    ActivityFailed,
    ActivityRegistry,
    BackoffStrategy,
    NonRetryableError,
    OrchestrationContext,
    OrchestrationRegistry,
    RetryPolicy,
)
from duroxy.history import ActivityFailedEvent, ActivityScheduled, encode_event
from duroxy.testing import OrchestrationEnvironment, Replayer

attempts: list[int] = []


class CardDeclined(NonRetryableError):
    pass


class Outer:
    class Inner(Exception):
        pass


class MyValueError(ValueError):
    pass


async def charge(ctx: ActivityContext, kind: str) -> str:
    attempts.append(ctx.attempt)
    if kind == "declined":
        raise CardDeclined("card 4242 declined")
    if kind == "plain":
        raise NonRetryableError("stop")
    if kind == "value":
        raise ValueError("bad amount")
    if kind == "subvalue":
        raise MyValueError("bad amount, subclass")
    if kind == "inner":
        raise Outer.Inner("nested")
    if kind == "flaky" and ctx.attempt < 3:
        raise RuntimeError("try again")
    return f"charged on attempt {ctx.attempt}"


def policy(*non_retryable: Any) -> RetryPolicy:
    return RetryPolicy(5, backoff=BackoffStrategy.Fixed(delay=timedelta(minutes=5)),
                       non_retryable=non_retryable)


async def pay(ctx: OrchestrationContext, inp: dict[str, Any]) -> dict[str, Any]:
    listed = tuple(Outer.Inner if n == "Outer.Inner" else ValueError if n == "ValueError"
                   else n for n in inp["non_retryable"])
    try:
        if inp.get("no_retry"):
            out = await ctx.schedule_activity("charge", inp["kind"])
        else:
            out = await ctx.schedule_activity_with_retry("charge", inp["kind"],
                                                         policy(*listed))
    except ActivityFailed as e:
        return {"error_type": e.error_type, "attempts": e.attempts,
                "retryable": e.retryable, "message": e.message}
    return {"out": out}


ACTIVITIES = ActivityRegistry.builder().register("charge", charge).build()
ORCHESTRATIONS = OrchestrationRegistry.builder().register("pay", pay).build()


async def run(kind: str, *non_retryable: str, no_retry: bool = False
              ) -> tuple[dict[str, Any], OrchestrationEnvironment, list[Any]]:
    attempts.clear()
    async with OrchestrationEnvironment(ACTIVITIES, ORCHESTRATIONS) as env:
        await env.client.start_orchestration("p", "pay", {
            "kind": kind, "non_retryable": list(non_retryable), "no_retry": no_retry})
        status = await env.client.wait_for_orchestration("p", timeout=5)
        history = await env.client.read_history("p")
        exported = await env.client.export_history("p")
    assert status.error is None, status.error
    assert (await Replayer(ORCHESTRATIONS).replay_history(exported)).ok
    return status.output, env, history


@pytest.mark.parametrize(("kind", "error_type"), [
    ("declined", "CardDeclined"), ("plain", "NonRetryableError")])
async def test_a_non_retryable_error_fails_at_once_whatever_the_policy(
        kind: str, error_type: str) -> None:
    out, _, history = await run(kind)
    assert out == {"error_type": error_type, "attempts": 1, "retryable": False,
                   "message": {"declined": "card 4242 declined", "plain": "stop"}[kind]}
    assert attempts == [1]
    # recorded: the failure says it stops the retries (in the stored wire form too)
    [failed] = [e for e in history if isinstance(e, ActivityFailedEvent)]
    assert failed.retryable is False and '"retryable":false' in encode_event(failed)


async def test_without_a_retry_policy_it_is_retryable_false_too() -> None:
    out, _, _ = await run("declined", no_retry=True)
    assert (out["attempts"], out["retryable"]) == (1, False)


async def test_an_ordinary_failure_is_retried_and_stays_retryable() -> None:
    out, _, history = await run("value")
    assert out == {"error_type": "ValueError", "attempts": 5, "retryable": True,
                   "message": "bad amount"}
    assert attempts == [1, 2, 3, 4, 5]
    failures = [e for e in history if isinstance(e, ActivityFailedEvent)]
    # an ordinary failure's record is as it was before the field existed
    assert all(e.retryable and "retryable" not in encode_event(e) for e in failures)
    out, _, _ = await run("flaky", "ValueError")
    assert out == {"out": "charged on attempt 3"}


@pytest.mark.parametrize(("kind", "listed", "expected_attempts"), [
    ("value", ["ValueError"], 1),               # a listed class, by its __qualname__
    ("subvalue", ["ValueError"], 5),            # exact names: a subclass does not match
    ("subvalue", ["MyValueError"], 1),          # a listed string
    ("inner", ["Outer.Inner"], 1),              # a nested class's qualified name
    ("inner", ["Inner"], 5),                    # not its bare name
])
async def test_listed_types_stop_the_retries_by_exact_name(
        kind: str, listed: list[str], expected_attempts: int) -> None:
    out, _, history = await run(kind, *listed)
    assert out["attempts"] == expected_attempts
    assert out["retryable"] is (expected_attempts == 5)
    assert attempts == list(range(1, expected_attempts + 1))
    scheduled = [e for e in history if isinstance(e, ActivityScheduled)]
    assert len(scheduled) == expected_attempts


async def slow(ctx: ActivityContext, _: Any) -> None:
    await ctx.cancelled()  # (until the attempt's timeout cancels it)


async def times_out(ctx: OrchestrationContext, listed: bool) -> dict[str, Any]:
    retry = RetryPolicy(3, backoff=BackoffStrategy.Fixed(delay=0.01), timeout=0.2)
    if listed:
        retry = retry.with_non_retryable(TimeoutError)
    try:
        await ctx.schedule_activity_with_retry("slow", None, retry)
    except ActivityFailed as e:
        return {"error_type": e.error_type, "attempts": e.attempts, "retryable": e.retryable}
    return {}


@pytest.mark.parametrize(("listed", "expected"), [
    (True, {"error_type": "TimeoutError", "attempts": 1, "retryable": False}),
    (False, {"error_type": "TimeoutError", "attempts": 3, "retryable": True}),
])
async def test_listing_timeout_error_stops_at_the_first_timeout(
        listed: bool, expected: dict[str, Any]) -> None:
    # (on the real clock: a running activity holds the virtual one still)
    acts = ActivityRegistry.builder().register("slow", slow).build()
    orchs = OrchestrationRegistry.builder().register("times_out", times_out).build()
    async with OrchestrationEnvironment(acts, orchs, time_skipping=False) as env:
        await env.client.start_orchestration("t", "times_out", listed)
        status = await env.client.wait_for_orchestration("t", timeout=10)
    assert status.output == expected


def test_the_policy_keeps_what_it_is_given() -> None:
    # (one entry alone, or a list, is taken as the tuple it stands for)
    one: Any = "CardDeclined"
    assert RetryPolicy(non_retryable=one).non_retryable == ("CardDeclined",)
    one = ValueError
    assert RetryPolicy(non_retryable=one).non_retryable_names == {"ValueError"}
    many: Any = [KeyError, "X"]
    assert RetryPolicy(non_retryable=many).non_retryable == (KeyError, "X")
    assert RetryPolicy(non_retryable=(Outer.Inner,)).non_retryable_names == {"Outer.Inner"}
    for bad in ((1,), (ValueError, None), (b"X",), 3):
        with pytest.raises(TypeError, match="non_retryable"):
            RetryPolicy(non_retryable=bad)  # type: ignore[arg-type]

"""Writes the golden history files ``tests/golden/*.json``.

REGENERATE ONLY FOR AN INTENTIONAL CHANGE of what the engine records or of the history
wire format. These files stand for histories that earlier versions stored and that
running instances still carry; ``tests/engine/test_golden_histories.py`` fails whenever the
engine stops producing them byte for byte, which is the point. If a change is intended,
regenerate, review the diff of every file, say in the commit why stored histories
change, and bump ``duroxy.history.FORMAT_VERSION`` when older readers could not decode
the new form.

Usage (from the repository root)::

    python tests/golden/make_golden.py           # rewrite every file
    python tests/golden/make_golden.py --check   # exit 1 if a file would change

Each scenario below drives one orchestration of ``tests/engine/test_golden_histories.py``
with a scripted world (activity results, timers firing at their fire time, external
events, cancellation) and records the message events of every turn and the history
produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duroxy import codec
from duroxy._engine import TurnResult
from duroxy.history import (
    FORMAT_VERSION,
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    CancellationRequested,
    EventRaised,
    HistoryEvent,
    OrchestrationStarted,
    SubOrchestrationCompleted,
    SubOrchestrationFailedEvent,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
    encode_event,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the orchestrations live in the test module

from engine.test_golden_histories import (  # noqa: E402
    compact,
    message_json,
    new_execution,
    replay_turns,
)

START_US = 1_700_000_000_000_000
Activity = Callable[[Any, int], Any]  # (input, attempt) -> output; raising fails it


class World:
    """A scripted environment for one execution; records every turn it feeds."""

    def __init__(self, orchestration: str, instance_id: str, input: Any, *,
                 version: str = "1.0.0", extra: tuple[HistoryEvent, ...] = (),
                 **started: Any) -> None:
        self.orchestration = orchestration
        self.instance_id = instance_id
        self.input = input
        self.now_us = START_US
        self.turns: list[tuple[int, list[HistoryEvent]]] = []
        self.history: list[HistoryEvent] = []
        self.execution = new_execution(orchestration, instance_id)
        self.turn([OrchestrationStarted(name=orchestration, version=version,
                                        input=codec.encode(input), **started), *extra],
                  advance_ms=0)

    def turn(self, events: list[HistoryEvent], advance_ms: int = 1000) -> TurnResult:
        self.now_us += advance_ms * 1000
        self.turns.append((self.now_us, list(events)))
        result = self.execution.turn(events, self.now_us)
        self.history.extend(result.new_events)
        return result

    @property
    def finished(self) -> bool:
        return self.execution.finished

    def pending(self) -> list[HistoryEvent]:
        """Scheduled work with neither a completion nor a cancellation in history."""
        closed = {getattr(e, "source_event_id", None) for e in self.history}
        work = (ActivityScheduled, TimerCreated, SubOrchestrationScheduled)
        return [e for e in self.history if isinstance(e, work) and e.event_id not in closed]

    def outcome(self, event: HistoryEvent, activities: dict[str, Activity]) -> HistoryEvent:
        if isinstance(event, ActivityScheduled):
            try:
                value = activities[event.name](codec.decode(event.input), event.attempt)
            except Exception as e:
                return ActivityFailedEvent(source_event_id=event.event_id,
                                           error_type=type(e).__qualname__, message=str(e))
            return ActivityCompleted(source_event_id=event.event_id, result=codec.encode(value))
        if isinstance(event, TimerCreated):
            return TimerFired(source_event_id=event.event_id, fire_at=event.fire_at)
        raise AssertionError(f"script must complete {event} itself")

    def deliver(self, *events: HistoryEvent) -> TurnResult:
        """One turn; time moves to the latest fire time of the timers it fires."""
        fire = max((e.fire_at for e in events if isinstance(e, TimerFired)), default=0)
        advance = max(1000, (fire * 1000 - self.now_us) // 1000)
        return self.turn(list(events), advance_ms=advance)

    def run(self, activities: dict[str, Activity]) -> None:
        """Complete pending work one item per turn, oldest first, until the end."""
        while not self.finished:
            pending = self.pending()
            assert pending, "the orchestration waits for something the script never sends"
            self.deliver(self.outcome(pending[0], activities))

    def find(self, kind: type[HistoryEvent], **fields: Any) -> HistoryEvent:
        return next(e for e in self.history if isinstance(e, kind)
                    and all(getattr(e, k) == v for k, v in fields.items()))


def _fail(exc: Exception) -> Any:
    raise exc


# ======================================================================== scenarios
def scenario_activity() -> World:
    w = World("activity", "golden-activity", {"name": "vm-1"})
    w.run({"provision": lambda x, _a: {"id": "vm-1", **x},
           "assign_ip": lambda vm, _a: f"10.0.0.7/{vm['id']}"})
    return w


def scenario_timer() -> World:
    w = World("timer", "golden-timer", None)
    w.run({})
    return w


def scenario_retry() -> World:
    def charge(x: Any, attempt: int) -> Any:
        if attempt < 3:
            raise ConnectionError(f"gateway timeout on attempt {attempt}")
        return {"charged": x["order"], "attempt": attempt}

    w = World("retry", "golden-retry", 42)
    w.run({"charge": charge})
    return w


def scenario_select() -> World:
    w = World("select", "golden-select", None)
    slow = w.find(ActivityScheduled, name="slow")
    w.deliver(w.outcome(w.find(TimerCreated), {}))  # the timer wins; "slow" is cancelled
    # The cancelled activity reports anyway: dropped, it never reaches history.
    w.deliver(ActivityCompleted(source_event_id=slow.event_id, result='"late"'))
    timer = [e for e in w.pending() if isinstance(e, TimerCreated)][-1]
    w.deliver(w.outcome(timer, {}))  # beats the child "kid", which is cancelled
    w.deliver(EventRaised(name="go", data=codec.encode({"by": "ann"})))
    assert w.finished
    return w


def scenario_external_event() -> World:
    w = World("external_event", "golden-events", None)
    w.deliver(EventRaised(name="note", data='"n1"'), EventRaised(name="noise", data="1"))
    w.deliver(EventRaised(name="approval", data=codec.encode({"ok": True})))
    w.deliver(EventRaised(name="note", data='"n2"'))
    w.run({})
    return w


def scenario_sub_orchestration() -> World:
    w = World("sub_orchestration", "golden-parent", 3)
    a = w.find(SubOrchestrationScheduled, instance_id="golden-parent::sub::3")
    b = w.find(SubOrchestrationScheduled, instance_id="child-b")
    w.deliver(SubOrchestrationCompleted(source_event_id=b.event_id, result='{"n":40}'))
    w.deliver(SubOrchestrationCompleted(source_event_id=a.event_id, result='{"n":30}'))
    failing = w.find(SubOrchestrationScheduled, name="failing_child")
    w.deliver(SubOrchestrationFailedEvent(source_event_id=failing.event_id,
                                          error_type="ValueError", message="child broke"))
    assert w.finished
    return w


def scenario_child() -> World:
    w = World("child", "golden-parent::sub::3", 3, parent_instance_id="golden-parent",
              parent_execution_id=1, parent_event_id=3)
    assert w.finished
    return w


def scenario_continue_as_new() -> World:
    w = World("continue_as_new", "golden-can", 0)
    timer = w.find(TimerCreated)
    # An event arriving in the turn that ends the execution is not delivered to it
    # (the runtime carries it over to the next execution).
    w.deliver(w.outcome(timer, {}), EventRaised(name="carried", data='"c1"'))
    assert w.finished
    return w


def scenario_continue_as_new_execution_2() -> World:
    w = World("continue_as_new", "golden-can", 1, version="2.0.0", execution_id=2,
              custom_status='{"round":0,"seen":null}',
              extra=(EventRaised(name="carried", data='"c1"'),))
    w.run({})
    return w


def scenario_values() -> World:
    w = World("values", "golden-values", None)
    w.run({})
    return w


def scenario_custom_status() -> World:
    w = World("custom_status", "golden-status", None)
    w.run({"step": lambda n, _a: {"step": n}})
    return w


def scenario_cancellation() -> World:
    w = World("cancellation", "golden-cancel", None)
    w.deliver(w.outcome(w.find(ActivityScheduled, name="reserve"), {"reserve": lambda r, _a: r}))
    long_job = w.find(ActivityScheduled, name="long_job")
    w.deliver(CancellationRequested(reason="customer withdrew"))
    w.deliver(ActivityCompleted(source_event_id=long_job.event_id, result='"done anyway"'))
    w.run({"release": lambda r, _a: f"released {r}"})
    return w


def scenario_failure() -> World:
    w = World("failure", "golden-failure", None)
    w.run({"validate": lambda x, _a: _fail(ValueError(f"id {x['id']} invalid")),
           "submit": lambda x, _a: _fail(PermissionError("no quota left"))})
    return w


def scenario_fan_out() -> World:
    w = World("fan_out", "golden-fan-out", 3)
    squares = {"square": lambda n, _a: n * n}
    for event in reversed(w.pending()):  # complete out of order: join keeps argument order
        w.deliver(w.outcome(event, squares))
    w.deliver(*[w.outcome(e, squares) for e in w.pending()])  # both in one turn
    assert w.finished
    return w


SCENARIOS: dict[str, Callable[[], World]] = {
    name.removeprefix("scenario_"): fn for name, fn in globals().items()
    if name.startswith("scenario_") and callable(fn)
}


# ======================================================================== files
def render(w: World) -> str:
    history, _ = replay_turns(w.orchestration, w.instance_id, w.turns)
    assert [encode_event(e) for e in history] == [encode_event(e) for e in w.history]
    doc = {
        "format_version": FORMAT_VERSION,
        "orchestration": w.orchestration,
        "instance_id": w.instance_id,
        "input": w.input,
        "turns": [{"now_us": now_us, "events": [message_json(e) for e in events]}
                  for now_us, events in w.turns],
        "history": [json.loads(encode_event(e)) for e in history],
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    # What the test compares must survive the file round trip unchanged.
    assert [compact(e) for e in json.loads(text)["history"]] == [
        encode_event(e) for e in history]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="report files that would change, write nothing")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for name, scenario in SCENARIOS.items():
        path = HERE / f"{name}.json"
        text = render(scenario())
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "would change" if args.check else "written"
    for name in stale:
        print(f"{verb}: {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

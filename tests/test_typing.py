"""What a type checker sees of orchestration code: awaiting a durable future gives the
scheduled function's return type, or the ``output_type`` given. Runs mypy (strict) on a
small program and reads its ``reveal_type`` notes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

PROGRAM = '''
from dataclasses import dataclass
from duroxy import ActivityContext, OrchestrationContext, RetryPolicy

@dataclass
class Out:
    n: int

async def act(ctx: ActivityContext, x: int) -> Out:
    return Out(x)

def sync_act(ctx: ActivityContext, x: int) -> list[str]:
    return []

async def child(ctx: OrchestrationContext, x: int) -> float:
    return 1.0

async def orch(ctx: OrchestrationContext, x: int) -> None:
    reveal_type(await ctx.schedule_activity(act, 1))
    reveal_type(await ctx.schedule_activity(sync_act, 1))
    reveal_type(await ctx.schedule_activity("by-name", 1))
    reveal_type(await ctx.schedule_activity("by-name", 1, output_type=Out))
    reveal_type(await ctx.schedule_activity_typed("by-name", 1, Out))
    reveal_type(await ctx.schedule_activity_with_retry(act, 1, RetryPolicy(3)))
    reveal_type(await ctx.schedule_sub_orchestration(child, 1))
    reveal_type(await ctx.schedule_sub_orchestration("by-name", 1, output_type=Out))
    reveal_type(await ctx.schedule_timer(1))
    reveal_type(await ctx.schedule_wait("e", output_type=Out))
    reveal_type(await ctx.utcnow())
    reveal_type(await ctx.new_guid())
    reveal_type(await ctx.select2(ctx.schedule_timer(1), ctx.schedule_wait("e")))
    reveal_type(await ctx.join([ctx.schedule_activity(act, i) for i in range(3)]))
'''

EXPECTED = [
    "snippet.Out", "builtins.list[builtins.str]", "Any", "snippet.Out", "snippet.Out",
    "snippet.Out", "builtins.float", "snippet.Out", "None", "snippet.Out",
    "datetime.datetime", "builtins.str", "tuple[builtins.int, Any]", "builtins.list[Any]",
]


def _short(t: str) -> str:
    return t.replace("builtins.", "")


def test_awaiting_a_durable_future_gives_the_scheduled_type(tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text(PROGRAM, encoding="utf-8")
    out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir",
                                     str(tmp_path / "cache"), str(path)])
    revealed = re.findall(r'Revealed type is "([^"]+)"', out)
    assert [_short(t) for t in revealed] == [_short(t) for t in EXPECTED], out + err
    assert status == 0 and "error:" not in out, out  # notes only: the program type-checks


def test_runtime_options_take_every_field_and_a_timedelta_for_each_duration(
        tmp_path: Path) -> None:
    """The type checker's view of ``RuntimeOptions(...)`` is written by hand (durations
    take a ``timedelta``, which the fields' types cannot say): it must name every field,
    and refuse a wrong type."""
    import dataclasses

    from duroxy import RuntimeOptions

    durations = set(RuntimeOptions._DURATIONS)
    samples = {int: "1", float: "1.0", "str | None": '"w"', "TagFilter": "TagFilter.ANY"}
    args = []
    for field in dataclasses.fields(RuntimeOptions):
        if field.name in durations:
            args.append(f"{field.name}=timedelta(seconds=400)")
        else:
            kind = {"int": int, "float": float}.get(str(field.type), str(field.type))
            args.append(f"{field.name}={samples[kind]}")
    program = ("from datetime import timedelta\n"
               "from duroxy import RuntimeOptions, TagFilter\n"
               f"RuntimeOptions({', '.join(args)})\n"
               "RuntimeOptions(poll_interval=0.5, heartbeat_interval=3)\n"
               "RuntimeOptions(poll_interval='fast')\n")
    path = tmp_path / "options_snippet.py"
    path.write_text(program, encoding="utf-8")
    out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir",
                                     str(tmp_path / "cache"), str(path)])
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "options_snippet.py:5:" in errors[0], out + err
    assert '"poll_interval"' in errors[0] and status == 1
    given = {name: timedelta(seconds=400) for name in durations}
    given["session_idle_timeout"] = timedelta(minutes=10)  # longer than the lock, as it must
    options = RuntimeOptions(**given)  # type: ignore[arg-type]
    assert {name: getattr(options, name) for name in durations} == {
        name: value.total_seconds() for name, value in given.items()}
    assert all(type(getattr(options, name)) is float for name in durations)

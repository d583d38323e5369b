"""A small app for the command-line tests: ``duroxy worker cli_app:registries``."""

from __future__ import annotations

from typing import Any

from duroxy import ActivityContext, ActivityRegistry, OrchestrationContext, OrchestrationRegistry


async def greet(ctx: ActivityContext, name: str) -> str:
    return f"hello {name}"


async def hello(ctx: OrchestrationContext, input: dict[str, Any]) -> dict[str, Any]:
    ctx.set_custom_status("greeting")
    greeting = await ctx.schedule_activity("greet", input["name"])
    return {"greeting": greeting}


async def fails(ctx: OrchestrationContext, input: Any) -> None:
    raise RuntimeError(f"failed on purpose: {input}")


async def waits(ctx: OrchestrationContext, input: Any) -> dict[str, Any]:
    data = await ctx.schedule_wait("go")
    return {"got": data}


async def parent(ctx: OrchestrationContext, input: Any) -> dict[str, Any]:
    child: dict[str, Any] = await ctx.schedule_sub_orchestration(
        "hello", {"name": "child"}, instance_id=f"{ctx.instance_id}::child")
    return child


async def versioned_1(ctx: OrchestrationContext, input: Any) -> str:
    return "v1"


async def versioned_2(ctx: OrchestrationContext, input: Any) -> str:
    return "v2"


activities = ActivityRegistry.builder().register("greet", greet).build()
orchestrations = (OrchestrationRegistry.builder()
                  .register("hello", hello)
                  .register("fails", fails)
                  .register("waits", waits)
                  .register("parent", parent)
                  .register_versioned("versioned", "2.0.0", versioned_2)
                  .register_versioned("versioned", "1.0.0", versioned_1)
                  .build())
registries = (activities, orchestrations)


def make_registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    return registries

"""Registries: versions in semver order, build-time errors, decorators, lookups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from duroxy import (
    ActivityRegistry,
    ConfigurationError,
    NotRegistered,
    OrchestrationRegistry,
    PayloadError,
)
from duroxy._semver import parse_semver


async def act(ctx: Any, x: int) -> int:
    return x


async def act2(ctx: Any, x: int) -> str:
    return str(x)


def sync_act(ctx: Any, x: int) -> int:
    return x


async def orch(ctx: Any, x: Any) -> Any:
    return x


async def orch2(ctx: Any, x: Any) -> Any:
    return x


def test_latest_version_in_semver_order_whatever_the_registration_order() -> None:
    reg = (OrchestrationRegistry.builder()
           .register_versioned("o", "1.10.0", orch2)
           .register("o", orch)  # 1.0.0
           .register_versioned_typed("o", "1.2.0", orch)
           .register_versioned("o", "1.10.0-rc.1", orch)
           .build())
    assert reg.versions("o") == ["1.0.0", "1.2.0", "1.10.0-rc.1", "1.10.0"]
    assert reg.resolve("o").version == "1.10.0" and reg.resolve("o").fn is orch2
    assert reg.resolve("o", "1.2.0").version == "1.2.0"
    assert reg.name_of(orch2) == "o"


def test_duroxide_style_names_work() -> None:
    name = "toygres::orchestration::create-instance"
    reg = OrchestrationRegistry.builder().register_typed(name, orch).build()
    assert reg.resolve(name).fn is orch


@pytest.mark.parametrize(("builder", "needle"), [
    (lambda: OrchestrationRegistry.builder().register("o", orch).register("o", orch2),
     "registered twice"),
    (lambda: OrchestrationRegistry.builder().register_versioned("o", "1.0", orch),
     "not a semantic version"),
    (lambda: OrchestrationRegistry.builder().register("o", "not callable"),  # type: ignore[arg-type]
     "not callable"),
    (lambda: OrchestrationRegistry.builder().register("", orch), "1 to 1,024"),
    (lambda: ActivityRegistry.builder().register("a", act).register_typed("a", act2),
     "registered twice"),
    (lambda: ActivityRegistry.builder().register("a", 42), "not callable"),  # type: ignore[arg-type]
    (lambda: ActivityRegistry.builder().register_versioned("a", "v1", act),
     "not a semantic version"),
])
def test_build_rejects_bad_registrations(builder: Any, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        builder().build()


def test_resolve_names_what_is_missing() -> None:
    reg = OrchestrationRegistry.builder().register("o", orch).build()
    with pytest.raises(NotRegistered, match="'nope' is not registered"):
        reg.resolve("nope")
    with pytest.raises(NotRegistered, match=r"version '2.0.0'.*1\.0\.0"):
        reg.resolve("o", "2.0.0")


def test_activity_versions_run_the_highest_and_know_their_types() -> None:
    reg = (ActivityRegistry.builder().register_versioned("a", "2.0.0", act2)
           .register("a", act).register(sync_act).build())
    entry = reg.get("a")
    assert entry is not None and entry.fn is act2 and entry.output_type is str
    sync = reg.get("sync_act")
    assert sync is not None and not sync.is_async and sync.input_type is int
    assert reg.name_of(act2) == "a" and reg.get("missing") is None


def test_decorators_register() -> None:
    acts = ActivityRegistry.builder()
    orchs = OrchestrationRegistry.builder()

    @acts.activity("double")
    async def double(ctx: Any, x: int) -> int:
        return 2 * x

    @orchs.orchestration("flow", version="1.0.1")
    async def flow(ctx: Any, x: int) -> int:
        return x

    assert acts.build().get("double") is not None
    assert orchs.build().resolve("flow").version == "1.0.1"


def test_semver_ordering() -> None:
    ordered = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0", "1.0.1",
               "1.10.0", "2.0.0+build.5"]
    assert sorted(reversed(ordered), key=parse_semver) == ordered


def test_string_annotations_resolve_types_local_to_the_registering_function() -> None:
    from dataclasses import dataclass

    @dataclass
    class Loc:
        x: int

    async def by_scope(ctx: Any, loc: Loc) -> Loc:  # names Loc only in annotations
        return loc

    acts = ActivityRegistry.builder().register("scoped", by_scope).build()
    entry = acts.get("scoped")
    assert entry is not None
    assert entry.input_type is Loc and entry.output_type is Loc


def test_string_annotations_resolve_through_the_closure() -> None:
    from dataclasses import dataclass

    @dataclass
    class Point:
        y: int

    def make() -> Any:
        async def by_closure(ctx: Any, p: Point) -> Point:
            return Point(p.y + 1)  # Point is a free variable of the function
        return by_closure

    acts = ActivityRegistry.builder()
    _register_elsewhere(acts, make())  # registered from a scope where Point is unknown
    entry = acts.build().get("closure")
    assert entry is not None and entry.input_type is Point and entry.output_type is Point


def _register_elsewhere(builder: Any, fn: Any) -> None:
    builder.register("closure", fn)


def test_an_unresolvable_string_annotation_still_fails_the_build_naming_it() -> None:
    async def broken(ctx: Any, x: NoSuchType) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1

    with pytest.raises(PayloadError, match="NoSuchType"):
        ActivityRegistry.builder().register("broken", broken).build()


@dataclass
class Shadowed:
    y: int


async def shadowed_act(ctx: Any, s: Shadowed) -> Shadowed:
    return s


def test_the_registering_scope_never_shadows_the_function_own_globals() -> None:
    Shadowed = dict  # noqa: F841 - a local of the same name as the module's class
    entry = ActivityRegistry.builder().register("s", shadowed_act).build().get("s")
    assert entry is not None and entry.input_type is globals()["Shadowed"]


def test_a_function_registered_in_a_scope_is_freed_with_it() -> None:
    import gc
    import weakref

    from duroxy import codec

    def scope() -> weakref.ref[Any]:
        @dataclass
        class Local:
            z: int

        ballast = bytearray(10_000_000)  # noqa: F841 - what the scope also holds

        async def local_act(ctx: Any, v: Local) -> Local:
            return v

        entry = ActivityRegistry.builder().register("l", local_act).build().get("l")
        assert entry is not None and entry.input_type is Local
        return weakref.ref(local_act)

    ref = scope()
    codec._annotations._cached_input_type.cache_clear()
    codec._annotations._cached_output_type.cache_clear()
    gc.collect()
    assert ref() is None

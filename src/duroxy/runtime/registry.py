"""Activity and orchestration registries, built once and then read-only.

Names are free-form strings (the Duroxide convention ``"{package}::orchestration::{name}"``
works as any other). Orchestrations are versioned by semver strings; a new instance
runs the highest registered version unless told otherwise.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from .. import codec
from .._names import name_problem
from .._semver import parse_semver
from ..errors import ConfigurationError, NotRegistered

__all__ = [
    "ActivityRegistry",
    "ActivityRegistryBuilder",
    "OrchestrationRegistry",
    "OrchestrationRegistryBuilder",
    "parse_semver",
]

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_VERSION = "1.0.0"

def _check_name(name: str, what: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise ConfigurationError(f"{what} name {problem}: {name!r:.80}")


def _check_callable(fn: Any, what: str, name: str) -> None:
    if not callable(fn):
        raise ConfigurationError(f"{what} {name!r} is not callable: {fn!r:.80}")


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
    return inspect.iscoroutinefunction(call) if not inspect.isroutine(target) else False


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    input_type: Any
    output_type: Any


class ActivityRegistry:
    """Activities by name. Build with :meth:`builder`."""

    def __init__(self, entries: dict[str, ActivityEntry]) -> None:
        self._entries = dict(entries)
        self._names = {id(e.fn): e.name for e in entries.values()}

    @staticmethod
    def builder() -> ActivityRegistryBuilder:
        return ActivityRegistryBuilder()

    def get(self, name: str) -> ActivityEntry | None:
        return self._entries.get(name)

    def name_of(self, fn: Callable[..., Any]) -> str | None:
        return self._names.get(id(fn))

    def output_type(self, name: str) -> Any:
        entry = self._entries.get(name)
        return entry.output_type if entry else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _remember_caller_scope(fn: Any) -> None:
    """Let ``fn``'s string annotations use the locals of the code that registers it
    (the first frame outside this module): a type defined in the same function is
    then found, as it would be without ``from __future__ import annotations``."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    if frame.f_locals is not frame.f_globals:  # module level: the globals are known
        codec.remember_scope(fn, frame.f_locals)


class _Builder:
    """What both registry builders share: registration in call order, checked at build."""

    _kind = ""

    def __init__(self) -> None:
        self._items: list[tuple[str, str, Callable[..., Any]]] = []

    def register(self, name: str | Callable[..., Any], fn: Callable[..., Any] | None = None
                 ) -> Self:
        """``register(name, fn)`` (version ``1.0.0``), or ``register(fn)`` to use the
        function's name."""
        if fn is None and callable(name):
            fn, name = name, str(getattr(name, "__name__", ""))
        _remember_caller_scope(fn)
        self._items.append((name, DEFAULT_VERSION, fn))  # type: ignore[arg-type]
        return self

    register_typed = register

    def register_versioned(self, name: str, version: str, fn: Callable[..., Any]) -> Self:
        _remember_caller_scope(fn)
        self._items.append((name, version, fn))
        return self

    register_versioned_typed = register_versioned

    def _versions(self) -> dict[str, dict[str, Callable[..., Any]]]:
        """Every registration by name and version; ``ConfigurationError`` for a bad name,
        a non-callable, a bad semver or a name and version registered twice."""
        versions: dict[str, dict[str, Callable[..., Any]]] = {}
        for name, version, fn in self._items:
            _check_name(name, self._kind)
            _check_callable(fn, self._kind, name)
            parse_semver(version)
            by_version = versions.setdefault(name, {})
            if version in by_version:
                raise ConfigurationError(
                    f"{self._kind} {name!r} version {version!r} is registered twice")
            by_version[version] = fn
        return versions


class ActivityRegistryBuilder(_Builder):
    """Activities may be registered in several versions, as orchestrations are; an
    activity is looked up by name and runs its highest registered version."""

    _kind = "activity"

    def activity(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator form: ``@builder.activity("name")``."""
        def deco(fn: F) -> F:
            self.register(name or fn.__name__, fn)
            return fn
        return deco

    def build(self) -> ActivityRegistry:
        versions = self._versions()
        entries: dict[str, ActivityEntry] = {}
        for name, by_version in versions.items():
            fn = by_version[max(by_version, key=parse_semver)]
            entries[name] = ActivityEntry(name, fn, _is_async(fn), codec.input_type_of(fn),
                                          codec.output_type_of(fn))
        return ActivityRegistry(entries)


@dataclass(frozen=True, slots=True)
class OrchestrationEntry:
    name: str
    version: str
    fn: Callable[..., Any]


class OrchestrationRegistry:
    """Orchestrations by name and version. Build with :meth:`builder`."""

    def __init__(self, entries: dict[str, dict[str, OrchestrationEntry]]) -> None:
        self._entries = {name: dict(sorted(v.items(), key=lambda kv: parse_semver(kv[0])))
                         for name, v in entries.items()}
        self._names = {id(e.fn): e.name for v in entries.values() for e in v.values()}

    @staticmethod
    def builder() -> OrchestrationRegistryBuilder:
        return OrchestrationRegistryBuilder()

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, lowest first."""
        return list(self._entries.get(name, {}))

    def latest_version(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def resolve(self, name: str, version: str | None = None) -> OrchestrationEntry:
        """The entry for ``name`` at ``version`` (latest when ``None``); raises
        :class:`NotRegistered` naming what is missing."""
        by_version = self._entries.get(name)
        if not by_version:
            raise NotRegistered(f"orchestration {name!r} is not registered on this worker")
        if version is None:
            return by_version[next(reversed(by_version))]
        entry = by_version.get(version)
        if entry is None:
            raise NotRegistered(f"orchestration {name!r} version {version!r} is not registered "
                                f"on this worker (registered: {', '.join(by_version)})")
        return entry

    def name_of(self, fn: Callable[..., Any]) -> str | None:
        return self._names.get(id(fn))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())


def _check_orchestration_fn(name: str | Callable[..., Any], fn: Any) -> None:
    """An orchestration must be ``async def`` (or a partial of one, or an object whose
    ``__call__`` is): the engine awaits what it returns, and a plain ``def`` would only
    fail when an instance first runs it. Refused at registration, naming the function."""
    if fn is None or not callable(fn) or _is_async(fn):
        return  # not callable: build() says so, with the other registration errors
    target = fn
    while isinstance(target, functools.partial):  # name the function inside
        target = target.func
    what = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None)
    where = f"{module}.{what}" if module and module != "__main__" else what
    shown = name if isinstance(name, str) and name else what
    raise TypeError(
        f"orchestration {shown!r}: {where} is a plain function, not an async def; an "
        f"orchestration must be declared `async def {getattr(target, '__name__', what)}(ctx, "
        "input)` (a functools.partial of one, or an object with an async __call__, works "
        "too). Blocking work belongs in an activity")


class OrchestrationRegistryBuilder(_Builder):
    _kind = "orchestration"

    def register(self, name: str | Callable[..., Any], fn: Callable[..., Any] | None = None
                 ) -> Self:
        """``register(name, fn)`` (version ``1.0.0``), or ``register(fn)`` to use the
        function's name. ``fn`` must be an ``async def`` (or a partial of one, or an
        object with an ``async def __call__``): a plain function raises ``TypeError``."""
        _check_orchestration_fn(name, name if fn is None and callable(name) else fn)
        return super().register(name, fn)

    register_typed = register

    def register_versioned(self, name: str, version: str, fn: Callable[..., Any]) -> Self:
        """Register ``fn`` as ``version`` of ``name`` (a semver string); ``TypeError``
        for a plain function, as :meth:`register`."""
        _check_orchestration_fn(name, fn)
        return super().register_versioned(name, version, fn)

    register_versioned_typed = register_versioned

    def orchestration(self, name: str | None = None, *, version: str = DEFAULT_VERSION
                      ) -> Callable[[F], F]:
        """Decorator form: ``@builder.orchestration("name", version="1.0.1")``."""
        def deco(fn: F) -> F:
            self.register_versioned(name or fn.__name__, version, fn)
            return fn
        return deco

    def build(self) -> OrchestrationRegistry:
        entries = {name: {v: OrchestrationEntry(name, v, fn) for v, fn in by_version.items()}
                   for name, by_version in self._versions().items()}
        return OrchestrationRegistry(entries)


# ====================================================================== finding registries
class RegistriesNotFound(ValueError):
    """A ``MODULE[:ATTR]`` target that names no registries (the module cannot be
    imported, the attribute is missing, or it is not registries)."""


def _as_registries(obj: Any, where: str) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    def build(value: Any) -> Any:
        return value.build() if hasattr(value, "build") and not isinstance(
            value, (ActivityRegistry, OrchestrationRegistry)) else value

    if isinstance(obj, (tuple, list)):
        items = [build(x) for x in obj]
        acts = [x for x in items if isinstance(x, ActivityRegistry)]
        orchs = [x for x in items if isinstance(x, OrchestrationRegistry)]
        if len(items) == 2 and len(acts) == 1 and len(orchs) == 1:
            return acts[0], orchs[0]
        raise RegistriesNotFound(f"{where} is a sequence but not (ActivityRegistry, "
                         "OrchestrationRegistry)")
    if hasattr(obj, "activities") and hasattr(obj, "orchestrations"):
        acts_obj, orchs_obj = build(obj.activities), build(obj.orchestrations)
        if callable(acts_obj) and not isinstance(acts_obj, ActivityRegistry):
            acts_obj = build(acts_obj())
        if callable(orchs_obj) and not isinstance(orchs_obj, OrchestrationRegistry):
            orchs_obj = build(orchs_obj())
        if isinstance(acts_obj, ActivityRegistry) and isinstance(
                orchs_obj, OrchestrationRegistry):
            return acts_obj, orchs_obj
        raise RegistriesNotFound(f"{where}.activities/.orchestrations are not an ActivityRegistry "
                         "and an OrchestrationRegistry")
    raise RegistriesNotFound(f"{where} is neither (ActivityRegistry, OrchestrationRegistry) nor an "
                     "object with .activities and .orchestrations")


def load_registries(target: str) -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """Resolve ``MODULE[:ATTR]``: a tuple ``(activities, orchestrations)``, an object or
    module with ``activities`` and ``orchestrations`` attributes, or a callable returning
    either. The working directory is importable, as with ``python -m``. Raises
    :class:`RegistriesNotFound` naming what is wrong with ``target``."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise RegistriesNotFound(f"worker target {target!r} must look like MODULE:ATTR")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise RegistriesNotFound(f"cannot import module {module_name!r}: {e}") from None
        raise
    obj: Any = module
    for part in attr.split(".") if attr else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistriesNotFound(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, (type, ActivityRegistry, OrchestrationRegistry)):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise RegistriesNotFound(f"{target} is a callable that needs arguments; point at "
                             "the registries or at a function without parameters") from None
        except ValueError:  # no signature to inspect (a builtin): just call it
            pass
        obj = obj()
    return _as_registries(obj, target)

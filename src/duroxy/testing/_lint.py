"""The determinism lint: calls in orchestration code that would make a replay decide
differently from the run it replays (the wall clock, randomness, the environment, I/O,
threads, iteration over sets), found by reading the source, before anything runs.

Static: a target module is imported only to find its registries; the functions are
then read from their source files and never called. The lint reads each orchestration's
body, its nested functions and lambdas, and, transitively, the functions of the same
module it calls by plain name. Names are resolved through the module's imports
(``import time as t``, ``from datetime import datetime``), so an alias is no hiding
place. ``# duroxy: ignore[DUR001]`` (or a bare ``# duroxy: ignore``) at the end of a
line silences that line.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..runtime.registry import OrchestrationRegistry, RegistriesNotFound, load_registries

__all__ = ["RULES", "LintFinding", "lint"]


@dataclasses.dataclass(frozen=True)
class LintFinding:
    """One finding: ``path:line:col: RULE message``."""

    rule: str
    message: str
    path: str
    line: int
    col: int
    #: the orchestration the finding was reached from
    function: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.rule} {self.message}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: rule -> (what it flags, what to use instead)
RULES: dict[str, tuple[str, str]] = {
    "DUR001": ("reads the wall clock", "`await ctx.utcnow()`"),
    "DUR002": ("draws random numbers", "an activity, or a seed from `await ctx.new_guid()`"),
    "DUR003": ("makes a random UUID", "`await ctx.new_guid()`"),
    "DUR004": ("reads the process environment", "the input, or an activity"),
    "DUR005": ("does I/O", "an activity"),
    "DUR006": ("sleeps blocking the worker's event loop",
               "`await asyncio.sleep()` or `ctx.schedule_timer()`"),
    "DUR007": ("uses threads or executors", "an activity"),
    "DUR008": ("iterates a set while scheduling work (set order differs between "
               "processes)", "`sorted(...)`, or `ctx.select`/`ctx.join`"),
}

_CLOCK = {"time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns",
          "time.perf_counter", "time.perf_counter_ns", "time.localtime", "time.gmtime",
          "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today",
          "datetime.date.today"}
_ENVIRONMENT = {"os.environ", "os.getenv", "os.getcwd", "os.getcwdb", "os.getpid",
                "sys.argv", "os.environb"}
_IO_CALLS = {"open", "io.open", "sqlite3.connect", "psycopg.connect", "os.open",
             "pathlib.Path.open", "pathlib.Path.read_text", "pathlib.Path.write_text",
             "pathlib.Path.read_bytes", "pathlib.Path.write_bytes"}
_IO_MODULES = ("socket", "requests", "httpx", "urllib.request", "aiohttp", "subprocess")
_PATH_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes"}
_SUPPRESS = re.compile(r"#\s*duroxy:\s*ignore(?:\[([A-Z0-9,\s]+)\])?\s*$")


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _rule_of_call(name: str, call: ast.Call) -> tuple[str, str] | None:
    """(rule, what) for a call of the dotted name ``name``, or ``None``."""
    if name in _CLOCK:
        return "DUR001", f"`{name}()`"
    if name == "random.Random" or name == "random.SystemRandom":
        if name == "random.SystemRandom" or not (call.args or call.keywords):
            return "DUR002", f"an unseeded `{name}()`"
        return None
    if _within(name, "random") or _within(name, "secrets") or name == "os.urandom":
        return "DUR002", f"`{name}()`"
    if name in ("uuid.uuid1", "uuid.uuid4"):
        return "DUR003", f"`{name}()`"
    if name in _ENVIRONMENT:
        return "DUR004", f"`{name}`"
    if name == "time.sleep":
        return "DUR006", "`time.sleep()`"
    if name in _IO_CALLS or any(_within(name, m) for m in _IO_MODULES):
        return "DUR005", f"`{name}()`"
    if _within(name, "threading") or _within(name, "concurrent.futures") \
            or name == "asyncio.to_thread":
        return "DUR007", f"`{name}()`"
    return None


class _Imports:
    """What the names of a module's top level stand for (``t`` -> ``time``)."""

    def __init__(self, tree: ast.Module) -> None:
        self.alias: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.alias[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.alias[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.alias[a.asname or a.name] = f"{node.module}.{a.name}"

    def qualify(self, node: ast.expr) -> str | None:
        """The dotted name an expression stands for (``datetime.datetime.now``), or
        ``None`` when it is not a chain of names."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Call):  # pathlib.Path(...).read_text: the class's method
            inner = self.qualify(node.func)
            if inner is None:
                return None
            return ".".join([inner, *reversed(parts)])
        if not isinstance(node, ast.Name):
            return None
        head = self.alias.get(node.id)
        if head is None:
            if node.id == "open" and not parts:
                return "open"
            return None
        return ".".join([head, *reversed(parts)])


class _Module:
    """One source file, parsed once: its tree, lines, imports and top-level functions."""

    def __init__(self, path: str) -> None:
        self.path = path
        source = Path(path).read_text(encoding="utf-8")
        self.lines = source.splitlines()
        self.tree = ast.parse(source, filename=path)
        self.imports = _Imports(self.tree)
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {
            n.name: n for n in self.tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def node_at(self, name: str, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        for node in ast.walk(self.tree):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name == name and _first_line(node) <= line <= node.lineno):
                return node
        return None

    def suppressed(self, line: int, rule: str) -> bool:
        if not 1 <= line <= len(self.lines):
            return False
        m = _SUPPRESS.search(self.lines[line - 1])
        if m is None:
            return False
        listed = m.group(1)
        return listed is None or rule in {r.strip() for r in listed.split(",")}


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


_SCHEDULING = re.compile(r"^(schedule_|dequeue_|start_|create_task$|ensure_future$)")


def _schedules_work(body: Iterable[ast.AST]) -> bool:
    """Whether statements await or schedule anything (a loop whose order then matters)."""
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Await):
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and _SCHEDULING.match(node.func.attr):
                return True
    return False


class _Checker:
    """Walks one orchestration and what it calls in its module."""

    def __init__(self, module: _Module, orchestration: str,
                 keep: Callable[[str], bool]) -> None:
        self.module = module
        self.orchestration = orchestration
        self.keep = keep
        self.findings: list[LintFinding] = []
        self._seen: set[int] = set()

    def check(self, fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        set_names = self._set_names(fn)
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                self._call(node)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                name = self.module.imports.qualify(node)
                if name in _ENVIRONMENT:
                    self._found("DUR004", f"`{name}`", node)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                if self._is_set(node.iter, set_names) and _schedules_work(node.body):
                    self._found("DUR008", "a `for` loop over a set", node.iter)
            elif isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp,
                                   ast.DictComp)):
                element = [node.key, node.value] if isinstance(node, ast.DictComp) \
                    else [node.elt]
                for gen in node.generators:
                    if self._is_set(gen.iter, set_names) and _schedules_work(element):
                        self._found("DUR008", "a comprehension over a set", gen.iter)

    def _call(self, node: ast.Call) -> None:
        imports = self.module.imports
        name = imports.qualify(node.func)
        if name is not None:
            found = _rule_of_call(name, node)
            if found is not None:
                self._found(found[0], found[1], node)
                return
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr == "run_in_executor":
                self._found("DUR007", "`run_in_executor()`", node)
            elif func.attr in _PATH_METHODS and name is None:
                self._found("DUR005", f"`.{func.attr}()`", node)
        elif isinstance(func, ast.Name) and func.id in self.module.functions \
                and func.id not in imports.alias:
            self.check(self.module.functions[func.id])  # same module, by plain name

    def _set_names(self, fn: ast.AST) -> set[str]:
        """Names bound to sets in ``fn``: ``done, pending = await asyncio.wait(...)``,
        and plain assignments of a set."""
        names: set[str] = set()
        for node in ast.walk(fn):
            if not isinstance(node, ast.Assign):
                continue
            value = node.value.value if isinstance(node.value, ast.Await) else node.value
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Call) \
                        and self.module.imports.qualify(value.func) == "asyncio.wait":
                    names.update(e.id for e in target.elts if isinstance(e, ast.Name))
                elif isinstance(target, ast.Name) and self._is_set(value, set()):
                    names.add(target.id)
        return names

    def _is_set(self, node: ast.expr, set_names: set[str]) -> bool:
        if isinstance(node, (ast.Set, ast.SetComp)):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("set", "frozenset"):
            return True
        return isinstance(node, ast.Name) and node.id in set_names

    def _found(self, rule: str, what: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        col = getattr(node, "col_offset", 0) + 1
        if not self.keep(rule) or self.module.suppressed(line, rule):
            return
        does, instead = RULES[rule]
        self.findings.append(LintFinding(
            rule, f"{what} {does} in orchestration {self.orchestration!r}: use {instead}",
            self.module.path, line, col, self.orchestration))


# ------------------------------------------------------------------ targets
def _is_orchestration(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An ``async def`` whose first parameter is annotated ``OrchestrationContext``."""
    if not isinstance(fn, ast.AsyncFunctionDef):
        return False
    params = [*fn.args.posonlyargs, *fn.args.args]
    if not params or params[0].annotation is None:
        return False
    ann = params[0].annotation
    text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) \
        else ast.unparse(ann)
    return text.split(".")[-1] == "OrchestrationContext"


def _registries_in(obj: Any) -> Iterator[OrchestrationRegistry]:
    if isinstance(obj, OrchestrationRegistry):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _registries_in(item)
    elif hasattr(obj, "build") and hasattr(obj, "register_versioned"):
        built = obj.build()
        if isinstance(built, OrchestrationRegistry):
            yield built


def _functions_of(registry: OrchestrationRegistry) -> Iterator[tuple[str, Any]]:
    for name in registry.names():
        for version in registry.versions(name):
            yield f"{name}@{version}", registry.resolve(name, version).fn


def _module_targets(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
    """A module's registries' orchestrations, then its own orchestration functions."""
    for value in list(vars(module).values()):
        for registry in _registries_in(value):
            yield from _functions_of(registry)
    path = getattr(module, "__file__", None)
    if path and path.endswith(".py"):
        parsed = _Module(path)
        for fn in parsed.functions.values():
            if _is_orchestration(fn):
                obj = getattr(module, fn.name, None)
                if obj is not None:
                    yield fn.name, obj


def _attr_targets(target: str) -> Iterator[tuple[str, Any]]:
    """``MODULE:ATTR`` as ``duroxy worker`` reads it, or an orchestration registry (or
    its builder) there."""
    try:
        _acts, orchs = load_registries(target)
    except RegistriesNotFound:
        module_name, _, attr = target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        found = list(_registries_in(obj))
        if not found:
            raise
        for registry in found:
            yield from _functions_of(registry)
        return
    yield from _functions_of(orchs)


def _import_path(path: str) -> types.ModuleType:
    name = f"_duroxy_lint_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot read {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def _targets(target: Any) -> Iterator[tuple[str, Any]]:
    """(orchestration name, function) pairs a target stands for."""
    if isinstance(target, os.PathLike) or (isinstance(target, str)
                                          and target.endswith(".py")):
        path = os.fspath(target)
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path!r}")
        yield from _module_targets(_import_path(path))
    elif isinstance(target, str):
        if ":" in target:
            yield from _attr_targets(target)
        else:
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as e:
                raise ValueError(f"cannot import module {target!r}: {e}") from None
            yield from _module_targets(module)
    elif isinstance(target, types.ModuleType):
        yield from _module_targets(target)
    elif isinstance(target, OrchestrationRegistry) or hasattr(target, "register_versioned"):
        for registry in _registries_in(target):
            yield from _functions_of(registry)
    elif callable(target):
        yield getattr(target, "__qualname__", repr(target)), target
    else:
        raise TypeError(f"cannot lint {target!r}: give a module, a module name, a "
                        "function, a registry or a path")


def _rules(ids: Iterable[str] | str | None, what: str) -> set[str] | None:
    if ids is None:
        return None
    listed = {i.strip().upper() for i in (ids.split(",") if isinstance(ids, str) else ids)
              if i.strip()}
    unknown = listed - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule(s) in {what}: {', '.join(sorted(unknown))} "
                         f"(the rules are {', '.join(RULES)})")
    return listed


def lint(*targets: Any, select: Iterable[str] | str | None = None,
         ignore: Iterable[str] | str | None = None) -> list[LintFinding]:
    """Lint the orchestrations of ``targets`` (modules, module names, ``MODULE:ATTR``,
    functions, registries or ``.py`` paths) for nondeterminism; returns the findings,
    sorted by file and line. ``select``/``ignore``: rule ids (``"DUR001,DUR006"``)."""
    chosen, dropped = _rules(select, "select"), _rules(ignore, "ignore") or set()

    def keep(rule: str) -> bool:
        return (chosen is None or rule in chosen) and rule not in dropped

    modules: dict[str, _Module] = {}
    findings: dict[tuple[str, int, int, str], LintFinding] = {}
    for target in targets:
        for orchestration, fn in _targets(target):
            source = inspect.unwrap(fn)
            code = getattr(source, "__code__", None)
            path = inspect.getsourcefile(source) if code is not None else None
            if code is None or path is None:
                continue  # a builtin or C callable: nothing to read
            module = modules.get(path) or modules.setdefault(path, _Module(path))
            node = module.node_at(source.__name__, code.co_firstlineno)
            if node is None:
                continue
            checker = _Checker(module, orchestration, keep)
            checker.check(node)
            for f in checker.findings:
                findings.setdefault((f.path, f.line, f.col, f.rule), f)
    return sorted(findings.values(), key=lambda f: (f.path, f.line, f.col, f.rule))

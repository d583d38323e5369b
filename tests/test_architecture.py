"""Layering rules of DESIGN.md ("Layers and who may import whom"), checked on the source.

Every module under ``src/duroxy`` is parsed with :mod:`ast` (nothing is imported), and
every ``import``/``from ... import`` in it is resolved to an absolute module name:
relative imports are resolved against the module's package, and imports inside
functions, methods and ``if TYPE_CHECKING:`` blocks count like top-level ones (a lazy
import still couples the layers; it only hides the coupling from import time).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import duroxy

PACKAGE_DIR = Path(duroxy.__file__).resolve().parent  # .../src/duroxy
SRC_DIR = PACKAGE_DIR.parent
MAX_LINES = 800

ROOT = "duroxy"  # the facade package: importing from it pulls in every layer
ENGINE = "duroxy._engine"
RUNTIME = "duroxy.runtime"
PROVIDERS = "duroxy.providers"
CLIENT = "duroxy.client"
CLI = "duroxy.cli"
BASE_MODULES = ("duroxy.history", "duroxy.errors", "duroxy.codec", "duroxy._limits",
                "duroxy._names", "duroxy._semver", "duroxy._tracing",
                "duroxy.options", "duroxy._hooks", "duroxy._clock")

# The one import from the runtime the client is allowed (semver validation of
# start_orchestration_versioned), by module and by name.
CLIENT_ALLOWED_RUNTIME = {("duroxy.runtime.registry", "parse_semver")}

# Modules the replay engine must never use: it is sans I/O and never reads a clock.
ENGINE_FORBIDDEN_STDLIB = ("time", "threading", "sqlite3", "socket", "selectors",
                           "subprocess", "concurrent")


@dataclass(frozen=True)
class Import:
    importer: str  # module that imports
    target: str  # absolute module imported (the package itself for `from pkg import attr`)
    names: tuple[str, ...]  # names taken by `from target import ...`; () for `import target`
    line: int

    def __str__(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else (
            f"import {self.target}")
        return f"{self.importer}:{self.line}: {what}"


def module_name(path: Path) -> str:
    parts = list(path.resolve().relative_to(SRC_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    base = SRC_DIR.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def resolve_imports(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source`` (a module named ``module``), anywhere in the tree."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, (), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{module}:{node.lineno}: relative import beyond "
                                         "the top-level package")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            attrs: list[str] = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if alias.name != "*" and is_module(sub):
                    found.append(Import(module, sub, (), node.lineno))
                else:
                    attrs.append(alias.name)
            if attrs:
                found.append(Import(module, target, tuple(attrs), node.lineno))
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def all_imports() -> list[Import]:
    out: list[Import] = []
    for path in source_files():
        out.extend(resolve_imports(path.read_text(encoding="utf-8"), module_name(path),
                                   path.name == "__init__.py"))
    return out


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(importer_prefixes: tuple[str, ...], forbidden: tuple[str, ...],
               imports: list[Import] | None = None) -> list[str]:
    bad = []
    for imp in all_imports() if imports is None else imports:
        if not any(within(imp.importer, p) for p in importer_prefixes):
            continue
        for f in forbidden:
            # The facade counts only when imported itself, not as the parent of a layer.
            hit = imp.target == ROOT if f == ROOT else within(imp.target, f)
            if hit:
                bad.append(str(imp))
    return bad


# ======================================================================== the resolver
@pytest.mark.parametrize(("source", "module", "is_package", "expected"), [
    ("from ..runtime import Runtime", "duroxy._engine.context", False, ["duroxy.runtime"]),
    ("def f():\n    from ...client import Client\n", "duroxy.providers.sqlite.provider",
     False, ["duroxy.client"]),
    ("from . import _ops", "duroxy.providers.sqlite.provider", False,
     ["duroxy.providers.sqlite._ops"]),
    ("from .provider import SqliteProvider", "duroxy.providers.sqlite", True,
     ["duroxy.providers.sqlite.provider"]),
    ("from .. import codec", "duroxy._engine.context", False, ["duroxy.codec"]),
    ("from .. import Client", "duroxy._engine.context", False, ["duroxy"]),
    ("import duroxy.runtime.runtime as r", "duroxy.client", False,
     ["duroxy.runtime.runtime"]),
    ("if TYPE_CHECKING:\n    from .runtime import registry\n", "duroxy.client", False,
     ["duroxy.runtime.registry"]),
    ("class A:\n    def m(self):\n        import time\n", "duroxy._engine.loop", False,
     ["time"]),
])
def test_resolver_finds_relative_nested_and_submodule_imports(
        source: str, module: str, is_package: bool, expected: list[str]) -> None:
    assert [i.target for i in resolve_imports(source, module, is_package)] == expected


def test_rule_check_flags_a_forbidden_import() -> None:
    imports = resolve_imports("def f():\n    from ..runtime.runtime import Runtime\n",
                              "duroxy._engine.execution", False)
    assert violations((ENGINE,), (RUNTIME,), imports) == [
        "duroxy._engine.execution:2: from duroxy.runtime.runtime import Runtime"]
    facade = resolve_imports("from .. import Client", "duroxy.providers.memory", False)
    assert violations((PROVIDERS,), (CLIENT, ROOT), facade) != []
    assert violations((PROVIDERS,), (CLIENT, ROOT), resolve_imports(
        "from ..history import HistoryEvent", "duroxy.providers.memory", False)) == []


def test_every_source_file_is_seen() -> None:
    names = {module_name(p) for p in source_files()}
    for expected in ("duroxy", "duroxy._engine.execution", "duroxy.client", "duroxy.history",
                     "duroxy.providers.base", "duroxy.runtime.runtime"):
        assert expected in names
    assert any(imp.importer == "duroxy.client" for imp in all_imports())


# ======================================================================== the rules
def test_engine_imports_no_runtime_providers_client_or_cli() -> None:
    assert violations((ENGINE,), (RUNTIME, PROVIDERS, CLIENT, CLI, "duroxy.testing",
                                  "duroxy._connect", ROOT)) == []


def test_providers_import_no_engine_runtime_or_client() -> None:
    assert violations((PROVIDERS,), (ENGINE, RUNTIME, CLIENT, CLI, ROOT)) == []


def test_base_modules_import_no_upper_layer() -> None:
    assert violations(BASE_MODULES, (ENGINE, RUNTIME, PROVIDERS, CLIENT, CLI, ROOT)) == []


def test_client_imports_nothing_of_engine_or_runtime_but_parse_semver() -> None:
    bad = []
    for imp in all_imports():
        if imp.importer != CLIENT:
            continue
        if within(imp.target, ENGINE) or imp.target == ROOT:
            bad.append(str(imp))
        elif within(imp.target, RUNTIME):
            taken = {(imp.target, n) for n in imp.names} if imp.names else {(imp.target, "")}
            if not taken <= CLIENT_ALLOWED_RUNTIME:
                bad.append(str(imp))
    assert bad == []


def test_cli_testing_and_examples_use_no_private_module_of_other_layers() -> None:
    """DESIGN.md: the cli and the testing helpers know the public API, never private
    modules of other layers (the engine package, or an ``_underscore`` module of the
    providers or the runtime). The bundled example application is held to the same."""
    users = ("duroxy.cli", "duroxy.__main__", "duroxy.testing", "duroxy.examples", "duroxy.ui")
    bad = []
    for imp in all_imports():
        if not any(within(imp.importer, u) for u in users):
            continue
        layer_private = any(within(imp.target, layer) and any(
            part.startswith("_") for part in imp.target.split(".")[2:])
            for layer in (PROVIDERS, RUNTIME))
        if within(imp.target, ENGINE) or layer_private:
            bad.append(str(imp))
    assert bad == []


def test_engine_is_sans_io() -> None:
    bad = [str(imp) for imp in all_imports()
           if within(imp.importer, ENGINE)
           and any(within(imp.target, m) for m in ENGINE_FORBIDDEN_STDLIB)]
    assert bad == []


def test_a_module_past_500_lines_says_why_in_its_docstring() -> None:
    """About 500 lines is the sign to look for a second job in a room: a module that
    stays longer says why (the words "past 500 lines") in its docstring."""
    unexplained = {}
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > 500 and "past 500 lines" not in " ".join(doc.split()):
            unexplained[str(path.relative_to(SRC_DIR))] = n
    assert unexplained == {}, f"modules over 500 lines that do not say why: {unexplained}"


def test_no_module_longer_than_800_lines() -> None:
    too_long = {}
    for path in source_files():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long[str(path.relative_to(SRC_DIR))] = n
    assert too_long == {}, f"modules over {MAX_LINES} lines: {too_long}"


def test_relative_import_beyond_the_package_is_reported() -> None:
    with pytest.raises(AssertionError, match="beyond the top-level package"):
        resolve_imports("from ..x import y", "duroxy.client", False)


# The engine's rooms, leaf first: each may import only the rooms before it.
ENGINE_ORDER = ("futures", "loop", "matching", "port", "kvstate", "patching", "routing",
                "context", "execution")


def test_engine_rooms_import_one_way() -> None:
    rooms = {f"{ENGINE}.{name}": i for i, name in enumerate(ENGINE_ORDER)}
    present = {module_name(p) for p in source_files() if within(module_name(p), ENGINE)}
    assert present - {ENGINE} == set(rooms), "a room of the engine is not in ENGINE_ORDER"
    bad = [str(imp) for imp in all_imports()
           if imp.importer in rooms and imp.target in rooms
           and rooms[imp.target] >= rooms[imp.importer]]
    assert bad == []


def test_no_import_circles() -> None:
    """No module of the package reaches itself through imports (lazy ones included):
    rooms import one way. A package counts as its ``__init__`` module."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        # (Edges into the facade itself are the layer rules' business: it imports every
        # layer, and only the CLI, above them all, may use it.)
        if within(imp.target, ROOT) and imp.target not in (imp.importer, ROOT):
            graph.setdefault(imp.importer, set()).add(imp.target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_integrations_stand_apart() -> None:
    """DESIGN.md "Hooks, then integrations": OpenTelemetry (duroxy.otel) is built on the
    hooks alone, knows no engine, runtime, store or client, and nothing imports it; the
    dashboard (duroxy.ui) is imported by the command line only (lazily)."""
    otel = violations(("duroxy.otel",), (ENGINE, RUNTIME, PROVIDERS, CLIENT, CLI, ROOT,
                                         "duroxy.ui"))
    assert otel == []
    users = {imp.importer for imp in all_imports()
             if within(imp.target, "duroxy.otel") and imp.importer != "duroxy.otel"}
    assert users == set()
    ui_users = {imp.importer for imp in all_imports()
                if within(imp.target, "duroxy.ui") and not within(imp.importer, "duroxy.ui")}
    assert ui_users <= {"duroxy.cli._commands"}

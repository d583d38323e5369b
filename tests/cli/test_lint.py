"""The determinism lint: each rule flags what it names on a fixture module whose lines
are marked with the rules they break, and nothing else; suppression comments, rule
selection, every kind of target, the example application (clean), and the command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from duroxy import OrchestrationRegistry
from duroxy.testing import LintFinding, lint

FIXTURE = Path(__file__).parents[1] / "lint_fixtures" / "bad.py"
DUROXY = Path(sys.executable).parent / "duroxy"


def _marked() -> Counter[tuple[int, str]]:
    """(line, rule) for every ``# DURxxx`` marker of the fixture (not the ignores)."""
    marked: Counter[tuple[int, str]] = Counter()
    for n, text in enumerate(FIXTURE.read_text(encoding="utf-8").splitlines(), 1):
        comment = text.partition("#")[2]
        if "duroxy: ignore" in comment:
            continue
        for rule in re.findall(r"\bDUR\d{3}\b", comment):
            marked[(n, rule)] += 1
    return marked


def _found(findings: list[LintFinding]) -> Counter[tuple[int, str]]:
    return Counter((f.line, f.rule) for f in findings)


def test_every_marked_line_is_found_and_nothing_else() -> None:
    findings = lint(FIXTURE)
    assert _found(findings) == _marked()
    assert {f.rule for f in findings} == {f"DUR00{i}" for i in range(1, 9)}
    assert all(f.path == str(FIXTURE) for f in findings)


def test_a_finding_names_the_orchestration_and_the_replacement() -> None:
    (f,) = [f for f in lint(FIXTURE) if f.function == "blocking"]
    assert f.rule == "DUR006" and f.col == 5
    assert "'blocking'" in f.message and "asyncio.sleep()" in f.message
    assert str(f) == f"{FIXTURE}:{f.line}:5: DUR006 {f.message}"
    helper = [f for f in lint(FIXTURE) if f.function == "through_a_helper"]
    assert {f.rule for f in helper} == {"DUR001", "DUR002"}  # the helper and the lambda


def test_suppression_comments_silence_their_line() -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    ignored = {n for n, t in enumerate(lines, 1) if "duroxy: ignore" in t}
    assert len(ignored) == 2
    assert not {line for line, _rule in _found(lint(FIXTURE))} & ignored


def test_select_and_ignore() -> None:
    assert {f.rule for f in lint(FIXTURE, select="DUR001,DUR006")} == {"DUR001", "DUR006"}
    assert "DUR008" not in {f.rule for f in lint(FIXTURE, ignore=["DUR008"])}
    with pytest.raises(ValueError, match="DUR999"):
        lint(FIXTURE, select="DUR999")


def test_every_kind_of_target() -> None:
    by_path = _found(lint(FIXTURE))
    assert _found(lint("lint_fixtures.bad")) == by_path  # a module name
    import lint_fixtures.bad as module

    assert _found(lint(module)) == by_path  # a module
    assert {f.rule for f in lint(module.blocking)} == {"DUR006"}  # a function
    assert lint(module.registry) == []  # a registry: only the clean orchestration
    assert lint("lint_fixtures.bad:registry") == []  # MODULE:ATTR, as `worker` finds it
    assert lint(module.an_activity) != []  # a function given directly is read anyway
    with pytest.raises(ValueError, match="cannot import"):
        lint("no_such_module_anywhere")
    with pytest.raises(TypeError):
        lint(42)


def test_registered_orchestrations_are_linted_whatever_their_signature() -> None:
    async def sloppy(ctx, x):  # type: ignore[no-untyped-def]
        import time

        return time.time()

    reg = OrchestrationRegistry.builder().register("sloppy", sloppy).build()
    (f,) = lint(reg)
    assert f.rule == "DUR001" and f.function == "sloppy@1.0.0"


def test_the_example_application_is_clean() -> None:
    assert lint("duroxy.examples.provisioning.registry") == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DUROXY), "lint", *args], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[1])


def test_the_command() -> None:
    found = _cli(str(FIXTURE))
    assert found.returncode == 1
    assert len(found.stdout.splitlines()) == sum(_marked().values())
    clean = _cli("duroxy.examples.provisioning.registry")
    assert clean.returncode == 0 and clean.stdout == ""
    as_json = _cli(str(FIXTURE), "--select", "DUR006", "--json")
    assert as_json.returncode == 1
    (item,) = json.loads(as_json.stdout)
    assert item["rule"] == "DUR006" and item["function"] == "blocking"
    assert set(item) == {"rule", "message", "path", "line", "col", "function"}
    for bad in (["nowhere.py"], [str(FIXTURE), "--select", "DUR42"], ["no_such_module_x"]):
        proc = _cli(*bad)
        assert proc.returncode == 2, proc
        assert proc.stderr.startswith("duroxy: error:")

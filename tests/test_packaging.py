"""The Python versions named in pyproject.toml and the CI script agree: the classifiers
name the versions tested, CI runs every one of them, and the lowest is the one
``requires-python`` admits and the linters target."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _ci_versions() -> list[str]:
    found = re.search(r'^SUPPORTED="([^"]*)"$', (ROOT / ".ci" / "run").read_text(), re.M)
    assert found, ".ci/run must set SUPPORTED to the Python versions it runs the suite on"
    return found.group(1).split()


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def test_classifiers_name_the_versions_ci_runs() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    classifiers: list[str] = project["classifiers"]
    tested = [c.rsplit(" :: ", 1)[1] for c in classifiers
              if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert tested == sorted(tested, key=_minor) and tested
    ci = _ci_versions()
    assert set(tested) <= set(ci), f"CI does not run {set(tested) - set(ci)}"
    lowest = tested[0]
    assert min(ci, key=_minor) == lowest
    assert project["requires-python"] == f">={lowest}"
    tool = _pyproject()["tool"]
    assert isinstance(tool, dict)
    assert tool["mypy"]["python_version"] == lowest
    assert tool["ruff"]["target-version"] == "py" + lowest.replace(".", "")

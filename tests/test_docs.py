"""The documentation points only to what ships, and the site's API reference covers
every public name.

The site itself (``mkdocs build --strict``) is built by ``.ci/run``; the test that builds
it here runs where the ``docs`` extra is installed and is skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import duroxy

ROOT = Path(__file__).resolve().parents[1]


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools/mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mkdocs_hooks", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ====================================================================== the reference
def test_the_reference_pages_name_every_public_name() -> None:
    pages = _hooks().reference_pages()
    documented = {ident for page in pages for ident in page.identifiers}
    missing = [n for n in duroxy.__all__ if f"duroxy.{n}" not in documented]
    assert not missing, f"names of duroxy.__all__ missing from the API reference: {missing}"
    text = "\n".join(page.markdown() for page in pages)
    for name in duroxy.__all__:
        assert re.search(rf"^::: duroxy\.{re.escape(name)}$", text, re.M), name


def test_a_name_added_to_all_gets_a_page_of_its_module(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    hooks = _hooks()
    from duroxy import _names

    monkeypatch.setattr(duroxy, "did_you_mean", _names.did_you_mean, raising=False)
    monkeypatch.setattr(duroxy, "__all__", [*duroxy.__all__, "did_you_mean"])
    pages = {p.slug: p for p in hooks.reference_pages()}
    assert pages["names"].identifiers == ["duroxy.did_you_mean"]


def test_the_command_line_reference_has_every_command() -> None:
    from duroxy.cli import build_parser

    text = _hooks().cli_reference()
    commands = re.findall(r"^## `duroxy ([a-z-]+)`$", text, re.M)
    choices = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert choices is not None
    assert commands == list(choices)
    assert "watch" in commands and "--interval S" in text


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly_with_every_name_in_the_reference(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                       **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr
    html = "".join(p.read_text(encoding="utf-8")
                   for p in (tmp_path / "site" / "reference").rglob("*.html"))
    missing = [n for n in duroxy.__all__ if f'id="duroxy.{n}"' not in html]
    assert not missing, f"not in the built reference: {missing}"
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "duroxy watch" in cli


# ====================================================================== what ships
def test_docstrings_do_not_cite_files_that_do_not_ship() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py")
                 if "API.md" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_the_performance_page_points_only_to_what_ships() -> None:
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    for outside in ("../shared", "shared/bench", "setup.sh", "compare.sh"):
        assert outside not in text, outside
    assert "benchmarks/run.py" in text and (ROOT / "benchmarks" / "run.py").exists()
    assert "a side-by-side harness with Duroxide and DBOS" in text
    for path in re.findall(r"`(src/duroxy/[\w/]+\.py)`", text):
        assert (ROOT / path).exists(), path
    # The section another change fills in: its table header is there to extend.
    section = re.search(r"^## Latency switches\n(.*?)^## ", text, re.S | re.M)
    assert section, "no '## Latency switches' section"
    assert re.search(r"^\| switch \|.*\|\n\|[-:| ]+\|$", section.group(1), re.M)
    for heading in ("## How to measure", "## Current figures", "## Where the time goes"):
        assert f"\n{heading}\n" in text, heading


def test_the_version_is_0_2_0_everywhere() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == duroxy.__version__ == "0.2.0"
    assert "docs" in pyproject["project"]["optional-dependencies"]

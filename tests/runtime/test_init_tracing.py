"""``duroxy.init_tracing`` (API.md section 12, Logging): one handler on the ``duroxy``
logger, for a file or stderr, at the level given whatever the root logger's level."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import duroxy._tracing
from duroxy import init_tracing


@pytest.fixture(autouse=True)
def restore_duroxy_logger() -> Iterator[None]:
    logger = logging.getLogger("duroxy")
    handlers, level = list(logger.handlers), logger.level
    root_level = logging.getLogger().level
    yield
    installed = duroxy._tracing._installed
    if installed is not None:
        logger.removeHandler(installed)
        installed.close()
        duroxy._tracing._installed = None
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logging.getLogger().setLevel(root_level)


def test_records_at_the_level_go_to_the_file_whatever_the_root_level(tmp_path: Path) -> None:
    logging.getLogger().setLevel(logging.CRITICAL)
    path = tmp_path / "duroxy.log"
    path.write_text("kept\n")
    init_tracing(path, "debug")
    logging.getLogger("duroxy.orchestration").debug("a debug line", extra={"instance_id": "i-1"})
    logging.getLogger("duroxy.runtime").info("an info line")
    logging.getLogger("elsewhere").error("not duroxy's")
    lines = path.read_text().splitlines()
    assert lines[0] == "kept"  # appended to
    assert "DEBUG" in lines[1] and "duroxy.orchestration: a debug line [i-1]" in lines[1]
    assert lines[2].endswith("duroxy.runtime: an info line")
    assert len(lines) == 3


def test_a_second_call_replaces_the_first_handler(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first.log"
    init_tracing(first, "info")
    init_tracing(None, "warn")
    logger = logging.getLogger("duroxy")
    assert sum(h is duroxy._tracing._installed for h in logger.handlers) == 1
    assert logger.level == logging.WARNING
    logging.getLogger("duroxy.x").info("filtered out")
    logging.getLogger("duroxy.x").warning("to stderr")
    assert "to stderr" in capsys.readouterr().err
    assert first.read_text() == ""


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        init_tracing(None, "loud")
    with pytest.raises(RuntimeError, match=r"^Failed to open log file: "):
        init_tracing(tmp_path / "missing-dir" / "x.log")
    assert duroxy._tracing._installed is None  # nothing installed by a failed call

"""The command line in a new user's first hour, run as they run it: the ``duroxy``
executable of this environment, in a subprocess.

- ``start --wait`` with no worker (or none that has the orchestration) says so on stderr
  within a few seconds, and how to start one;
- under ``--json`` every failure is one JSON object on stderr, ``{"error": {...}}``;
- a store URL's password never shows (banners, errors, ``--json``);
- ``duroxy history ID | head``: a reader that goes away ends the command quietly;
- ``duroxy list`` has a PARENT column;
- ``duroxy watch ID`` prints events as they are recorded and exits when the instance ends;
- the README tells how to run the PostgreSQL tests, and its first line runs in a fresh
  virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
DUROXY = Path(sys.executable).with_name("duroxy")  # the console script of this venv
APP = "cli_app:registries"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DUROXY_STORE", "DUROXY_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


def duroxy(*args: str, store: str | None = None, timeout: float = 60,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(DUROXY), *(["--store", store] if store else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=_env())


class Worker:
    def __init__(self, store: str, log: Path, *extra: str) -> None:
        self.log = log
        with log.open("w") as fh:
            self.proc = subprocess.Popen(
                [str(DUROXY), "worker", APP, "--store", store, *extra],
                stdout=subprocess.DEVNULL, stderr=fh, text=True, env=_env(), cwd=log.parent)
        deadline = time.monotonic() + 30
        while "duroxy worker" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite store with a worker serving cli_app for the whole module."""
    d = tmp_path_factory.mktemp("first-hour")
    url = f"sqlite:///{d / 'app.db'}"
    worker = Worker(url, d / "worker.log")
    try:
        yield url
    finally:
        assert worker.stop() == 0, worker.log.read_text()


def json_error(proc: subprocess.CompletedProcess[str], code: int, kind: str) -> dict[str, Any]:
    """The one JSON error object of a failed ``--json`` command (stdout empty)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    error: dict[str, Any] = json.loads(lines[0])["error"]
    assert error["kind"] == kind and error["exit_code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def test_the_console_script_is_this_environments() -> None:
    assert DUROXY.exists(), f"no duroxy executable beside {sys.executable}"


# ====================================================================== 2. no worker
def test_start_wait_without_a_worker_says_how_to_start_one(tmp_path: Path) -> None:
    proc = duroxy("start", "hello", "--input", '{"name": "Ada"}', "--wait", "--timeout", "3",
                  cwd=tmp_path)  # the default store, in the working directory
    assert proc.returncode == 4, proc.stderr
    assert re.search(r"duroxy: warning: no worker is running on this store "
                     r"\(sqlite:///duroxy\.db\)", proc.stderr), proc.stderr
    # The default store needs no --store in the command it suggests.
    assert "start one in another terminal with: duroxy worker MODULE:ATTR" in proc.stderr
    # The warning came before the time-out, which ends the output.
    assert proc.stderr.index("warning") < proc.stderr.index("still PENDING")


def test_start_wait_with_workers_that_lack_the_name_names_them(served: str) -> None:
    proc = duroxy("start", "helo", "--wait", "--timeout", "3", store=served)
    assert proc.returncode == 4, proc.stderr
    assert "no running worker registers orchestration 'helo' (did you mean 'hello'?)" \
        in proc.stderr, proc.stderr
    assert f"duroxy --store {served.removeprefix('sqlite:///')}" not in proc.stderr
    assert f"duroxy --store {served} worker MODULE:ATTR" in proc.stderr, proc.stderr


def test_start_wait_json_warns_in_json(tmp_path: Path) -> None:
    proc = duroxy("--json", "start", "hello", "--wait", "--timeout", "2", cwd=tmp_path)
    warning, error = (json.loads(line) for line in proc.stderr.splitlines())
    assert warning["warning"]["kind"] == "no_worker"
    assert "no worker is running" in warning["warning"]["message"]
    assert error["error"]["kind"] == "timeout" and proc.returncode == 4


def test_start_wait_with_a_worker_prints_no_hint(served: str) -> None:
    proc = duroxy("start", "hello", "--input", '{"name": "Ada"}', "--wait", store=served)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# ====================================================================== 6. --json errors
@pytest.mark.parametrize("args, code, kind", [
    (["status", "nobody"], 3, "not_found"),
    (["history", "nobody"], 3, "not_found"),
    (["watch", "nobody"], 3, "not_found"),
    (["wait", "nobody", "--timeout", "1"], 3, "not_found"),
    (["start", "hello", "--input", "{not json"], 2, "usage"),
    (["list", "--limit", "many"], 2, "usage"),
    (["no-such-command"], 2, "usage"),
    (["status"], 2, "usage"),
    (["worker", "no_such_module:app"], 2, "usage"),
])
def test_every_failure_under_json_is_one_json_object(served: str, args: list[str], code: int,
                                                     kind: str) -> None:
    json_error(duroxy("--json", *args, store=served), code, kind)
    # --json after the command works the same
    json_error(duroxy(*args, "--json", store=served), code, kind)


def test_json_errors_of_the_store_and_refusals(served: str, tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    err = json_error(duroxy("--json", "list", store=missing), 5, "store")
    assert "nothing-here.db" in err["message"]
    assert not (tmp_path / "nothing-here.db").exists()
    assert duroxy("start", "hello", "--id", "taken", "--input", '{"name": "x"}',
                  store=served).returncode == 0
    err = json_error(duroxy("--json", "start", "hello", "--id", "taken", store=served), 5,
                     "refused")
    assert "taken" in err["message"]
    running = duroxy("start", "waits", "--id", "json-running", store=served)
    assert running.returncode == 0, running.stderr
    json_error(duroxy("--json", "delete", "json-running", store=served), 5, "refused")
    err = json_error(duroxy("--json", "wait", "json-running", "--timeout", "0.2",
                            store=served), 4, "timeout")
    assert "json-running" in err["message"]
    json_error(duroxy("--json", "list", store="memory://"), 2, "usage")


def test_without_json_errors_stay_one_line_of_text(served: str) -> None:
    proc = duroxy("status", "nobody", store=served)
    assert proc.returncode == 3
    assert proc.stderr == "duroxy: error: no instance with id 'nobody'\n"


# ====================================================================== 7. secrets
def test_store_passwords_never_show(tmp_path: Path) -> None:
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/prod?connect_timeout=2"
    for args in (["list"], ["--json", "list"], ["start", "hello"], ["--json", "status", "x"]):
        proc = duroxy(*args, store=url)
        assert proc.returncode == 5, (args, proc.stderr)
        assert "s3cret-pw" not in proc.stderr + proc.stdout, proc.stderr
        if args[-1] == "list":  # the error names the store, its password masked
            assert "postgresql://app:***@127.0.0.1:1/prod" in proc.stderr, proc.stderr
    dsn = "host=127.0.0.1 port=1 password=s3cret-pw dbname='unterminated"
    proc = duroxy("--json", "list", store=f"postgresql://x/y?options={dsn}")
    assert "s3cret-pw" not in proc.stderr + proc.stdout, proc.stderr


def test_the_worker_banner_masks_the_password(dsn: str, schemas: Any, tmp_path: Path) -> None:
    # The test server trusts its clients, so any password is accepted (and must not show).
    with_password = re.sub(r"^(postgres(?:ql)?://)([^:@/]+)(?::[^@/]*)?@",
                           r"\1\2:s3cret-pw@", dsn)
    assert "s3cret-pw" in with_password
    sep = "&" if "?" in with_password else "?"
    url = f"{with_password}{sep}schema={schemas()}"
    worker = Worker(url, tmp_path / "worker.log")
    try:
        banner = worker.log.read_text()
    finally:
        assert worker.stop() == 0
    assert "s3cret-pw" not in banner and ":***@" in banner, banner
    assert "s3cret-pw" not in worker.log.read_text()


# ====================================================================== 8. closed pipe
def test_a_reader_that_goes_away_ends_the_command_quietly(served: str) -> None:
    assert duroxy("start", "hello", "--id", "piped", "--input", '{"name": "x"}', "--wait",
                  store=served).returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines: every write fails
    try:
        proc = subprocess.run([str(DUROXY), "--store", served, "history", "piped"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60, env=_env())
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no traceback, no "Exception ignored" at exit
    assert proc.returncode == 0


def test_history_piped_into_head(served: str) -> None:
    assert duroxy("start", "hello", "--id", "headed", "--input", '{"name": "x"}', "--wait",
                  store=served).returncode == 0
    proc = subprocess.run(f"'{DUROXY}' --store '{served}' history headed | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=60, env=_env())
    assert proc.stdout.startswith("headed  hello@1.0.0  COMPLETED"), proc.stdout
    assert proc.stderr == ""


# ====================================================================== 9. PARENT
def test_list_shows_each_instances_parent(served: str) -> None:
    proc = duroxy("start", "parent", "--id", "mom", "--wait", store=served)
    assert proc.returncode == 0, proc.stderr
    table = duroxy("list", "--limit", "1000", store=served).stdout.splitlines()
    header = table[0].split()
    assert header == ["INSTANCE", "NAME", "STATE", "EXEC", "PARENT", "UPDATED"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["mom::child"][4] == "mom"
    assert rows["mom"][4] == "-"


# ====================================================================== 10. watch
def _read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"watch ended before {needle!r}: {lines} "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines


def test_watch_follows_an_instance_until_it_ends(served: str) -> None:
    assert duroxy("start", "waits", "--id", "watched", store=served).returncode == 0
    proc = subprocess.Popen([str(DUROXY), "--store", served, "watch", "watched"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        before = _read_until(proc, "EventSubscribed")  # printed while the instance waits
        assert before[0].startswith("watched  waits@1.0.0  execution 1")
        assert "OrchestrationStarted" in before[1]
        raised = duroxy("raise-event", "watched", "go", '{"n": 1}', store=served)
        assert raised.returncode == 0, raised.stderr
        after = _read_until(proc, "ended")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    kinds = [line.split()[2] for line in after[:-1]]
    assert kinds == ["EventRaised", "OrchestrationCompleted"], after
    assert after[-1] == "watched ended COMPLETED"


def test_watch_json_prints_one_event_per_line_and_exits_1_on_failure(served: str) -> None:
    assert duroxy("start", "fails", "--id", "watched-fail", "--input", '"x"', "--wait",
                  store=served).returncode == 1
    proc = duroxy("--json", "watch", "watched-fail", store=served)
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["OrchestrationStarted", "OrchestrationFailed"]
    assert {e["instance_id"] for e in events} == {"watched-fail"}
    assert [e["event_id"] for e in events] == [1, 2]


def test_watch_opens_the_store_read_only(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    proc = duroxy("watch", "x", store=f"sqlite:///{missing}")
    assert proc.returncode == 5 and "no such store file" in proc.stderr, proc.stderr
    assert not missing.exists()


# ====================================================================== 11. README
def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_says_how_to_run_the_postgresql_tests() -> None:
    readme = _readme()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README starts with no command block"
    commands = block.group(1)
    assert "DUROXY_TEST_PG_DSN=postgresql://" in commands, commands
    assert "pg_ctlcluster" in commands or "docker run" in commands, commands
    # It says that without the variable those tests are skipped, and what CI does.
    assert re.search(r"skipped.{0,200}DUROXY_TEST_PG_DSN|DUROXY_TEST_PG_DSN.{0,200}skipped",
                     readme, re.S)
    assert ".ci/run" in readme


def test_readme_first_line_runs_in_a_fresh_virtualenv() -> None:
    first = re.search(r"```bash\n(.*?)\n", _readme()).group(1)  # type: ignore[union-attr]
    command = first.split("#")[0].strip()
    # It makes its own virtualenv and calls that one's tools by path: nothing depends on
    # an activated environment or on a `pip` or `duroxy` already on PATH.
    assert command.startswith("python3 -m venv .venv && "), command
    for step in command.split("&&")[1:]:
        assert step.strip().startswith(".venv/bin/"), step
    assert ".venv/bin/duroxy demo" in command

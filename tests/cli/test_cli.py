"""The ``duroxy`` command line, run as a user runs it: ``python -m duroxy ...`` in a
subprocess, against a SQLite store, with a worker process serving ``cli_app``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from duroxy import ActivityRegistry, OrchestrationRegistry, TagFilter
from duroxy.cli import format_timeline, load_registries
from duroxy.cli._commands import parse_tag_filter
from duroxy.history import ActivityCompleted, ActivityScheduled, OrchestrationStarted

TESTS = Path(__file__).resolve().parents[1]
APP = "cli_app:registries"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DUROXY_STORE", "DUROXY_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


def duroxy(*args: str, store: str | None = None, timeout: float = 30,
           cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "duroxy", *(["--store", store] if store else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=_env(**env))


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def start_worker(store: str, log: Path, target: str = APP, *extra: str) -> Worker:
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "duroxy", "worker", target, "--store", store, *extra],
        stdout=subprocess.DEVNULL, stderr=fh, text=True, env=_env(), cwd=log.parent)
    fh.close()
    deadline = time.monotonic() + 20
    while "duroxy worker" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"worker did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return Worker(proc, log)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store with a worker serving it for the whole module."""
    d = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{d / 'x.db'}"
    worker = start_worker(url, d / "worker.log")
    try:
        yield url
    finally:
        worker.stop()


# ====================================================================== the demo
def test_demo_runs_and_reports_every_instance() -> None:
    proc = duroxy("demo", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every instance ended as expected" in out
    for iid in ("create-db-1", "create-db-2", "create-db-2::cleanup", "monitor::db-1",
                "apply-config-1.0.0", "apply-config-1.0.1", "apply-config-1.0.2"):
        assert f"== {iid} " in out
    assert "UNEXPECTED" not in out
    assert "OrchestrationContinuedAsNew" not in out  # the monitor shows its last execution
    assert "SubOrchestrationScheduled" in out and "EventRaised" in out


def test_demo_json_summary(tmp_path: Path) -> None:
    kept = tmp_path / "kept.db"
    proc = duroxy("demo", "--json", "--keep", str(kept), timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = as_json(proc)
    assert summary["ok"] is True
    states = {i["instance_id"]: i["state"] for i in summary["instances"]}
    assert states["create-db-2"] == "FAILED" and states["create-db-2::cleanup"] == "COMPLETED"
    versions = {i["output"]["version"] for i in summary["instances"]
                if i["instance_id"].startswith("apply-config-")}
    assert versions == {"1.0.0", "1.0.1", "1.0.2"}
    monitor = next(i for i in summary["instances"] if i["instance_id"] == "monitor::db-1")
    assert monitor["execution_id"] >= 3 and monitor["history"][-1]["kind"] == (
        "OrchestrationCompleted")
    # --keep leaves a store the other commands can read.
    listed = as_json(duroxy("list", "--json", store=f"sqlite:///{kept}"))
    assert {i["instance_id"] for i in listed} == set(states)


# ====================================================================== with a worker
def test_worker_serves_start_wait_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'own.db'}"
    worker = start_worker(url, tmp_path / "own.log", target="cli_app:make_registries")
    try:
        proc = duroxy("start", "hello", "--id", "h0", "--input", '{"name": "zoe"}', "--wait",
                      "--json", store=url)
        assert proc.returncode == 0, proc.stderr
        result = as_json(proc)
        assert result["instance_id"] == "h0" and result["state"] == "COMPLETED"
        assert result["output"] == {"greeting": "hello zoe"}
        assert result["version"] == "1.0.0" and result["error"] is None
    finally:
        code = worker.stop()
    assert code == 0
    log = worker.log.read_text()
    assert "worker stopped" in log and "Traceback" not in log


def test_workers_lists_running_and_stopped_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    worker = start_worker(url, tmp_path / "workers.log")
    try:
        [row] = as_json(duroxy("workers", "--json", store=url))
        assert row["pid"] == worker.proc.pid and row["alive"] is True
        assert row["worker_id"].endswith(f":{worker.proc.pid}")
        assert row["stopped_at"] is None and row["started_at"] <= row["last_seen_at"]
        assert "hello@1.0.0" in row["orchestrations"] and row["activities"] == ["greet"]
        assert (row["orchestration_concurrency"], row["activity_concurrency"],
                row["active_activities"], row["sessions_owned"]) == (32, 32, 0, 0)
        assert row["worker_node_id"] is None and row["tag_filter"] == "DEFAULT_ONLY"
        people = duroxy("workers", store=url)
        assert people.returncode == 0, people.stderr
        header, line, orchs, acts, routing = people.stdout.splitlines()
        assert header.split()[:2] == ["WORKER", "STATE"]
        assert line.split()[:2] == [row["worker_id"], "alive"]
        assert "versioned@1.0.0, versioned@2.0.0" in orchs and acts.split() == [
            "activities", "greet"]
        assert routing.split() == ["routing", "tags", "DEFAULT_ONLY,", "0", "session(s)",
                                   "owned"]
    finally:
        assert worker.stop() == 0
    assert as_json(duroxy("workers", "--json", store=url)) == []
    assert "no workers running" in duroxy("workers", store=url).stdout
    [stopped] = as_json(duroxy("workers", "--all", "--json", store=url))
    assert stopped["worker_id"] == row["worker_id"] and stopped["alive"] is False
    assert stopped["stopped_at"] is not None
    assert " stopped " in duroxy("workers", "--all", store=url).stdout.splitlines()[1]


def test_split_workers_from_the_command_line_run_an_instance_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'split.db'}"
    orchestrating = start_worker(url, tmp_path / "o.log", APP, "--activity-concurrency", "0",
                                 "--worker-id", "orch-only")
    acting = start_worker(url, tmp_path / "a.log", APP, "--orchestration-concurrency", "0",
                          "--tags", "default, gpu", "--node-id", "node-7",
                          "--max-sessions", "3", "--worker-id", "act-only")
    try:
        done = duroxy("start", "hello", "--id", "split", "--input", '{"name": "kim"}',
                      "--wait", "--json", store=url)
        assert done.returncode == 0, done.stderr
        assert as_json(done)["output"] == {"greeting": "hello kim"}
        rows = {r["worker_id"]: r for r in as_json(duroxy("workers", "--json", store=url))}
        assert (rows["orch-only"]["orchestration_concurrency"],
                rows["orch-only"]["activity_concurrency"]) == (32, 0)
        act = rows["act-only"]
        assert (act["orchestration_concurrency"], act["activity_concurrency"]) == (0, 32)
        assert act["tag_filter"] == 'default_and ["gpu"]'
        assert act["worker_node_id"] == "node-7"
        twin = duroxy("worker", APP, "--node-id", "node-7", store=url)
        assert twin.returncode == 2 and "--node-id 'node-7' is in use" in twin.stderr, \
            twin.stderr
    finally:
        assert orchestrating.stop() == 0 and acting.stop() == 0
    assert "1 activities" not in orchestrating.log.read_text()
    banner = acting.log.read_text()
    assert "no orchestrations, 1 activities (tags default_and [\"gpu\"])" in banner
    history = as_json(duroxy("history", "split", "--json", store=url))
    kinds = [e["kind"] for e in history["events"]]
    assert [k for k in kinds if k.startswith("Activity")] == ["ActivityScheduled",
                                                              "ActivityCompleted"]


def test_worker_routing_flags_refuse_bad_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    cases = {
        ("--tags", "gpu,,cpu"): "an empty tag",
        ("--tags", "any,gpu"): "'any' stands alone",
        ("--tags", "a,b,c,d,e,f"): "at most 5 tags",
        ("--orchestration-concurrency", "0", "--activity-concurrency", "0"):
            "runs nothing",
        ("--orchestration-concurrency", "0", "--tags", "none"): "runs nothing",
        ("--max-sessions", "-1"): "--max-sessions must be",
        ("--node-id", ""): "--node-id, when given, must be 1 to",
    }
    for flags, message in cases.items():
        proc = duroxy("worker", APP, *flags, store=url)
        assert proc.returncode == 2, (flags, proc.stderr)
        assert message in proc.stderr, (flags, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("spec", "expected"), [
    ("default", TagFilter.DEFAULT_ONLY), ("DEFAULT", TagFilter.DEFAULT_ONLY),
    ("any", TagFilter.ANY), ("none", TagFilter.NONE), ("gpu", TagFilter.tags(["gpu"])),
    (" gpu , cpu ", TagFilter.tags(["cpu", "gpu"])),
    ("default,gpu", TagFilter.default_and(["gpu"])),
    ("gpu,default", TagFilter.default_and(["gpu"])),
    ("default,default", TagFilter.DEFAULT_ONLY),
])
def test_parse_tag_filter_reads_every_documented_spec(spec: str, expected: TagFilter) -> None:
    assert parse_tag_filter(spec) == expected


def test_start_wait_json(store: str) -> None:
    proc = duroxy("start", "hello", "--id", "h1", "--input", '{"name": "ann"}', "--wait",
                  "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["output"] == {"greeting": "hello ann"}


def test_start_without_wait_and_default_id(store: str) -> None:
    proc = duroxy("start", "hello", "--input", '{"name": "bo"}', "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    started = as_json(proc)
    assert started["state"] == "PENDING" and len(started["instance_id"]) == 36  # a uuid4
    waited = duroxy("wait", started["instance_id"], "--json", store=store)
    assert waited.returncode == 0 and as_json(waited)["output"] == {"greeting": "hello bo"}


def test_failed_instance_exits_1(store: str) -> None:
    proc = duroxy("start", "fails", "--id", "f1", "--input", '"x"', "--wait", store=store)
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout and "failed on purpose: x" in proc.stdout
    # status only reads: it succeeds whatever the state
    status = duroxy("status", "f1", "--json", store=store)
    assert status.returncode == 0
    assert as_json(status)["error"] == {"kind": "application", "error_type": "RuntimeError",
                                        "message": "failed on purpose: x"}


def test_start_pinned_version(store: str) -> None:
    v1 = duroxy("start", "versioned", "--version", "1.0.0", "--wait", "--json", store=store)
    latest = duroxy("start", "versioned", "--wait", "--json", store=store)
    assert (as_json(v1)["output"], as_json(v1)["version"]) == ("v1", "1.0.0")
    assert (as_json(latest)["output"], as_json(latest)["version"]) == ("v2", "2.0.0")


def test_status_and_list(store: str) -> None:
    assert duroxy("start", "hello", "--id", "s1", "--input", '{"name": "cy"}', "--wait",
                  store=store).returncode == 0
    human = duroxy("status", "s1", store=store)
    assert human.returncode == 0
    lines = dict(line.split(None, 1) for line in human.stdout.splitlines())
    assert lines["state"] == "COMPLETED" and lines["name"] == "hello@1.0.0"
    assert json.loads(lines["output"]) == {"greeting": "hello cy"}
    assert lines["custom"] == '"greeting"'

    everything = as_json(duroxy("list", "--json", store=store))  # every match
    ids = [i["instance_id"] for i in everything]
    page = as_json(duroxy("list", "--json", "--limit", "1000", store=store))
    assert [i["instance_id"] for i in page["items"]] == ids
    assert page["next_page_token"] is None
    assert "s1" in ids and len(ids) == len(set(ids))
    failed = as_json(duroxy("list", "--state", "failed", "--json", store=store))
    assert failed and {i["state"] for i in failed} == {"FAILED"}
    named = as_json(duroxy("list", "--name", "hello", "--json", store=store))
    assert named and {i["name"] for i in named} == {"hello"}
    page = as_json(duroxy("list", "--json", "--limit", "2", "--offset", "1", store=store))
    assert [i["instance_id"] for i in page] == ids[1:3]
    table = duroxy("list", store=store).stdout.splitlines()
    assert table[0].split() == ["INSTANCE", "NAME", "STATE", "EXEC", "PARENT", "UPDATED"]
    assert any(line.startswith("s1 ") and "COMPLETED" in line for line in table)


def test_history_timeline(store: str) -> None:
    assert duroxy("start", "hello", "--id", "t1", "--input", '{"name": "di"}', "--wait",
                  store=store).returncode == 0
    proc = duroxy("history", "t1", store=store)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("t1  hello@1.0.0  COMPLETED  execution 1 of 1")
    body = [line.split() for line in lines[1:]]
    assert [(row[0], row[2]) for row in body] == [
        ("1", "OrchestrationStarted"), ("2", "CustomStatusSet"), ("3", "ActivityScheduled"),
        ("4", "ActivityCompleted"), ("5", "OrchestrationCompleted")]
    assert body[2][3] == "greet" and "<-" in lines[4] and "#3" in lines[4]
    assert 'result="hello di"' in lines[4]
    events = as_json(duroxy("history", "t1", "--json", store=store))["events"]
    assert events[0]["input"] == {"name": "di"}  # payloads decoded in JSON
    assert events[-1] == {**events[-1], "kind": "OrchestrationCompleted",
                          "output": {"greeting": "hello di"}}
    missing = duroxy("history", "t1", "--execution", "7", store=store)
    assert missing.returncode == 3 and "no execution 7" in missing.stderr


def test_raise_event(store: str) -> None:
    assert duroxy("start", "waits", "--id", "e1", store=store).returncode == 0
    proc = duroxy("raise-event", "e1", "go", '{"n": [1, 2]}', store=store)
    assert proc.returncode == 0 and "raised 'go' on e1" in proc.stdout
    waited = duroxy("wait", "e1", "--json", "--timeout", "20", store=store)
    assert as_json(waited)["output"] == {"got": {"n": [1, 2]}}


def test_cancel_then_delete(store: str) -> None:
    assert duroxy("start", "waits", "--id", "k1", store=store).returncode == 0
    refused = duroxy("delete", "k1", store=store)
    assert refused.returncode == 5 and "--force" in refused.stderr
    proc = duroxy("cancel", "k1", "--reason", "no longer needed", store=store)
    assert proc.returncode == 0 and "cancellation requested" in proc.stdout
    waited = duroxy("wait", "k1", "--json", store=store)
    assert waited.returncode == 1
    assert as_json(waited)["state"] == "CANCELLED"
    assert as_json(waited)["error"]["message"] == "no longer needed"
    again = duroxy("cancel", "k1", store=store)
    assert again.returncode == 0 and "already ended CANCELLED" in again.stdout
    deleted = duroxy("delete", "k1", "--json", store=store)
    assert deleted.returncode == 0 and as_json(deleted) == {"instance_id": "k1", "deleted": 1}
    assert duroxy("status", "k1", store=store).returncode == 3


def test_force_delete_running_instance(store: str) -> None:
    assert duroxy("start", "waits", "--id", "k2", store=store).returncode == 0
    proc = duroxy("delete", "k2", "--force", store=store)
    assert proc.returncode == 0 and proc.stdout.strip() == "deleted k2"
    assert duroxy("status", "k2", store=store).returncode == 3


# ====================================================================== errors
@pytest.mark.parametrize("args", [
    ["status", "nope"], ["history", "nope"], ["raise-event", "nope", "go"],
    ["cancel", "nope"], ["delete", "nope"], ["wait", "nope"],
])
def test_unknown_id_exits_3(store: str, args: list[str]) -> None:
    proc = duroxy(*args, store=store)
    assert proc.returncode == 3
    assert proc.stderr.strip() == "duroxy: error: no instance with id 'nope'"
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [
    [], ["start"], ["list", "--state", "BOGUS"], ["history", "x", "--execution", "one"],
    ["frobnicate"],
])
def test_bad_usage_exits_2(args: list[str]) -> None:
    proc = duroxy(*args)
    assert proc.returncode == 2 and "usage: duroxy" in proc.stderr


def test_bad_json_names_the_argument(store: str) -> None:
    proc = duroxy("start", "hello", "--input", "{name: 1}", store=store)
    assert proc.returncode == 2
    assert proc.stderr.startswith("duroxy: error: --input is not valid JSON")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = duroxy("raise-event", "h1", "go", "[1,", store=store)
    assert proc.returncode == 2 and "event data is not valid JSON" in proc.stderr


def test_input_from_file(store: str, tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{"name": "file"}')
    proc = duroxy("start", "hello", "--input", f"@{tmp_path / 'in.json'}", "--wait", "--json",
                  store=store)
    assert as_json(proc)["output"] == {"greeting": "hello file"}


def test_taken_id_and_bad_version(store: str) -> None:
    assert duroxy("start", "hello", "--id", "dup", "--input", '{"name": "x"}',
                  store=store).returncode == 0
    again = duroxy("start", "hello", "--id", "dup", store=store)
    assert again.returncode == 5 and "already exists" in again.stderr
    bad = duroxy("start", "hello", "--version", "latest", store=store)
    assert bad.returncode == 2 and "not a semantic version" in bad.stderr


def test_wait_timeout_exits_4(store: str) -> None:
    assert duroxy("start", "waits", "--id", "slow", store=store).returncode == 0
    proc = duroxy("wait", "slow", "--timeout", "0.3", store=store)
    assert proc.returncode == 4 and "still RUNNING" in proc.stderr
    proc = duroxy("start", "waits", "--id", "slow2", "--wait", "--timeout", "0.3", store=store)
    assert proc.returncode == 4


def test_missing_store_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    for args in (["status", "x"], ["workers"]):
        proc = duroxy(*args, store=f"sqlite:///{db}")
        assert proc.returncode == 5 and f"no such store file: {db}" in proc.stderr
        assert not db.exists()
    proc = duroxy("list", store="mysql://nowhere")
    assert proc.returncode == 2 and "unsupported store URL" in proc.stderr


def test_a_plain_path_is_a_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    assert duroxy("start", "hello", "--id", "p1", store=str(db)).returncode == 0
    assert db.exists()
    assert as_json(duroxy("status", "p1", "--json", store=f"sqlite:///{db}"))["state"] \
        == "PENDING"


def test_store_from_environment_and_default(store: str, tmp_path: Path) -> None:
    assert duroxy("start", "hello", "--id", "env1", store=store).returncode == 0
    via_env = duroxy("status", "env1", "--json", DUROXY_STORE=store)
    assert as_json(via_env)["instance_id"] == "env1"
    # Without --store or DUROXY_STORE: duroxy.db in the working directory.
    started = duroxy("start", "hello", "--id", "here", cwd=tmp_path)
    assert started.returncode == 0 and (tmp_path / "duroxy.db").exists()
    assert duroxy("status", "here", cwd=tmp_path).returncode == 0


def test_worker_with_bad_target_exits_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = duroxy("worker", "no_such_module_here:x", store=url)
    assert proc.returncode == 2 and "cannot import module" in proc.stderr
    proc = duroxy("worker", "cli_app:nothing", store=url)
    assert proc.returncode == 2 and "has no attribute" in proc.stderr
    proc = duroxy("worker", "cli_app:greet", store=url)
    assert proc.returncode == 2 and "needs arguments" in proc.stderr


# ====================================================================== in process
def test_load_registries_accepts_every_documented_shape() -> None:
    sys.path.insert(0, str(TESTS))
    try:
        import cli_app

        for target in ("cli_app:registries", "cli_app:make_registries", "cli_app"):
            acts, orchs = load_registries(target)
            assert acts is cli_app.activities and orchs is cli_app.orchestrations
    finally:
        sys.path.remove(str(TESTS))
    acts, orchs = load_registries("duroxy.examples.provisioning.registry")
    assert isinstance(acts, ActivityRegistry) and isinstance(orchs, OrchestrationRegistry)


def test_format_timeline_cuts_payloads() -> None:
    events = [
        OrchestrationStarted(event_id=1, ts=1_000, name="n", version="1.0.0",
                             input=json.dumps({"k": "v" * 200})),
        ActivityScheduled(event_id=2, ts=1_000, name="act", input="1", attempt=2),
        ActivityCompleted(event_id=3, ts=2_500, source_event_id=2, result='"done"'),
    ]
    lines = format_timeline(events, width=30)
    assert lines[0].split()[:4] == ["1", "+0.000s", "OrchestrationStarted", "n@1.0.0"]
    assert lines[0].endswith("...") and len(lines[0]) < 120
    assert lines[1].endswith("act input=1 attempt=2")
    assert lines[2].split()[:6] == ["3", "+1.500s", "ActivityCompleted", "<-", "#2",
                                    'result="done"']
    assert format_timeline([]) == ["(no events)"]
    assert len(format_timeline(events, width=0)[0]) > 200


def test_json_without_a_json_form_is_a_usage_error(store: str) -> None:
    for text, needle in (("NaN", "NaN is not a JSON value"),
                         ("[1e999]", "1e999 is too large")):
        proc = duroxy("start", "hello", "--id", "nan", "--input", text, store=store)
        assert proc.returncode == 2 and needle in proc.stderr
    assert duroxy("status", "nan", store=store).returncode == 3  # nothing was started

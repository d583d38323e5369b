"""benchmarks/run.py, the user's one command for the workloads, runs and prints its table
(the figures themselves are judged in docs/performance.md, never here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_every_workload_runs_and_lands_in_the_table(store: str) -> None:
    proc = _run("--store", store, "--workloads", "W1,W2,W3,W4,W5")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(rf"^\| {store} \| (W\d) [^|]*\| ([0-9.]+) \|$", proc.stdout, re.M)
    assert [w for w, _ in rows] == ["W1", "W2", "W3", "W4", "W5"]
    assert all(float(v) > 0 for _, v in rows)


def test_an_unknown_workload_or_store_is_named() -> None:
    proc = _run("--workloads", "W1,W9")
    assert proc.returncode == 2 and "W9" in proc.stderr
    proc = _run("--store", "mysql")
    assert proc.returncode == 2 and "mysql" in proc.stderr


def test_the_scale_out_benchmark_runs_worker_processes() -> None:
    proc = _run("--store", "sqlite", "--workers", "1,2", "--burn-ms", "0.2",
                "--orchestrations", "8")
    assert proc.returncode == 0, proc.stderr
    rates = re.findall(r"^\| sqlite \| X W4 8x5, 0.2 ms CPU/activity, (\d) worker\(s\) "
                       r"\(orch/s\) \| ([0-9.]+) \|$", proc.stdout, re.M)
    assert [n for n, _ in rates] == ["1", "2"] and all(float(v) > 0 for _, v in rates)


def test_a_workload_that_measures_memory_runs_alone_unless_it_comes_first() -> None:
    proc = _run("--store", "memory,sqlite", "--workloads", "W1,fanout",
                "--fanout-sizes", "20,40")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\| (\w+) \| ((?:W1|F) [^|]*?) \| ([0-9.]+) \|$", proc.stdout,
                      re.M)
    assert [(kind, key.split(":")[0].split(",")[0]) for kind, key, _ in rows] == [
        ("memory", "W1 one activity"), ("memory", "F fan-out 20"), ("memory", "F fan-out 20"),
        ("memory", "F fan-out 40"), ("memory", "F fan-out 40"),
        ("memory", "F ratio 40/20 per activity"),
        ("sqlite", "W1 one activity"), ("sqlite", "F fan-out 20"), ("sqlite", "F fan-out 20"),
        ("sqlite", "F fan-out 40"), ("sqlite", "F fan-out 40"),
        ("sqlite", "F ratio 40/20 per activity")], rows
    alone = re.findall(r"^(\w+) +fanout: in a process of its own", proc.stderr, re.M)
    assert alone == ["memory", "sqlite"]
    first = _run("--store", "memory", "--workloads", "fanout,W1", "--fanout-sizes", "20")
    assert first.returncode == 0, first.stderr
    assert "F fan-out 20: cost per activity" in first.stdout
    assert "in a process of its own" not in first.stderr

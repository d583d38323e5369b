"""duroxy workloads W1-W5 (and history-length scaling), on default settings.

    python benchmarks/run.py                       # SQLite file store, every workload
    python benchmarks/run.py --store postgres      # DSN from DUROXY_BENCH_PG_DSN
    python benchmarks/run.py --workloads W1,W2 --store sqlite,memory
    python benchmarks/run.py --store postgres --workers 1,2,4    # scale-out (see below)
    python benchmarks/run.py --workloads fanout --store sqlite,postgres  # joins up to 100k

With ``--workers N,...`` the script runs no runtime of its own: for each N it starts N
worker processes (``duroxy worker``) on one fresh store and, as a client only, runs W4
with activities that burn some CPU each (``--burn-ms``, default 2), so that the
workers' CPU is what limits throughput; it prints orchestrations per second and the
speedup over one worker.

Every workload runs on a fresh store with one untimed warm-up orchestration first;
the activity is trivial (returns its input) and every result is checked. Prints a
markdown table: lower is better for times, higher for rates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from duroxy import (
    ActivityRegistry,
    Client,
    OrchestrationRegistry,
    Runtime,
)
from duroxy.providers.base import Provider

PG_DSN = os.environ.get("DUROXY_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def noop(ctx: Any, x: Any) -> Any:
    return x


#: CPU each Burn activity uses, in ms (set by --burn-ms, passed to worker processes).
BURN_MS = float(os.environ.get("DUROXY_BENCH_BURN_MS", "2"))


async def burn(ctx: Any, x: Any) -> Any:
    """Work that holds the worker's CPU (hashing) for about ``BURN_MS``."""
    deadline = time.thread_time() + BURN_MS / 1000
    digest = b"duroxy"
    while time.thread_time() < deadline:
        for _ in range(200):
            digest = hashlib.sha256(digest).digest()
    return x


async def seq_burn(ctx: Any, n: int) -> int:
    for i in range(n):
        await ctx.schedule_activity("Burn", i)
    return n


async def one(ctx: Any, x: Any) -> Any:
    return await ctx.schedule_activity("Noop", x)


async def seq(ctx: Any, n: int) -> int:
    ok = 0
    for i in range(n):
        ok += 1 if await ctx.schedule_activity("Noop", i) == i else 0
    return ok


async def fan(ctx: Any, n: int) -> int:
    rs = await ctx.join([ctx.schedule_activity("Noop", i) for i in range(n)])
    return sum(1 for i, r in enumerate(rs) if r == i)


async def waiter(ctx: Any, _: Any) -> Any:
    return await ctx.schedule_wait("go")


async def timer(ctx: Any, seconds: float) -> str:
    await ctx.schedule_timer(timedelta(seconds=seconds))
    return "ok"


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    acts = ActivityRegistry.builder().register("Noop", noop).register("Burn", burn).build()
    orchs = (OrchestrationRegistry.builder().register("One", one).register("Seq", seq)
             .register("Fan", fan).register("Timer", timer).register("Waiter", waiter)
             .register("SeqBurn", seq_burn).build())
    return acts, orchs


def make_store(kind: str, tmp: str) -> tuple[Provider, Callable[[], Awaitable[None]]]:
    async def nothing() -> None:
        return None

    if kind == "sqlite":
        from duroxy.providers.sqlite import SqliteProvider

        return SqliteProvider(os.path.join(tmp, f"bench-{uuid.uuid4().hex}.db")), nothing
    if kind == "memory":
        from duroxy.providers.memory import InMemoryProvider

        return InMemoryProvider(), nothing
    if kind == "postgres":
        from duroxy.providers.postgres import PostgresProvider

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        store = PostgresProvider(PG_DSN, schema=schema)

        async def drop() -> None:
            import psycopg

            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

        return store, drop
    raise SystemExit(f"unknown store {kind!r} (sqlite, memory, postgres)")


class Bench:
    def __init__(self, store: Provider) -> None:
        self.store = store
        self.n = 0

    async def __aenter__(self) -> Bench:
        acts, orchs = registries()
        self.rt = await Runtime.start(self.store, acts, orchs)
        self.client = Client(self.store)
        await self.run("One", 0)  # warm-up
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rt.shutdown(timeout=5)
        await self.store.close()

    async def start(self, name: str, inp: Any) -> str:
        self.n += 1
        iid = f"{name}-{self.n}"
        await self.client.start_orchestration(iid, name, inp)
        return iid

    async def wait(self, iid: str) -> Any:
        st = await self.client.wait_for_orchestration(iid, timeout=300)
        if st.state.value != "COMPLETED":
            raise RuntimeError(f"{iid}: {st.state} {st.error}")
        return st.output

    async def run(self, name: str, inp: Any) -> Any:
        return await self.wait(await self.start(name, inp))


async def w1(b: Bench) -> dict[str, Any]:
    times = []
    for i in range(50):
        t = time.perf_counter()
        assert await b.run("One", i) == i
        times.append(time.perf_counter() - t)
    return {"W1 one activity, start→result (median ms)": statistics.median(times) * 1000}


async def w2(b: Bench, n: int = 200) -> dict[str, Any]:
    t = time.perf_counter()
    assert await b.run("Seq", n) == n
    dt = time.perf_counter() - t
    return {f"W2 {n} sequential activities (/s)": n / dt}


async def w3(b: Bench, n: int = 500) -> dict[str, Any]:
    t = time.perf_counter()
    assert await b.run("Fan", n) == n
    return {f"W3 fan-out {n}, join (s)": time.perf_counter() - t}


async def w4(b: Bench, m: int = 500, k: int = 5) -> dict[str, Any]:
    t = time.perf_counter()
    ids = [await b.start("Seq", k) for _ in range(m)]
    for iid in ids:
        assert await b.wait(iid) == k
    return {f"W4 {m} orchestrations x {k} (orch/s)": m / (time.perf_counter() - t)}


async def w5(b: Bench) -> dict[str, Any]:
    t = time.perf_counter()
    assert await b.run("Timer", 1.0) == "ok"
    return {"W5 1 s timer, overshoot (ms)": (time.perf_counter() - t - 1.0) * 1000}


async def scaling(b: Bench) -> dict[str, Any]:
    out = {}
    per_step = {}
    for n in (200, 2000):
        t = time.perf_counter()
        assert await b.run("Seq", n) == n
        per_step[n] = (time.perf_counter() - t) / n * 1000
        out[f"S {n}-step sequence (ms/step)"] = per_step[n]
    out["S ratio 2000/200 per step"] = per_step[2000] / per_step[200]
    return out


async def idle(b: Bench, seconds: float = 5.0) -> dict[str, Any]:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    await asyncio.sleep(seconds)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"idle runtime CPU (% of a core)": cpu / (time.perf_counter() - t) * 100}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def waiting(b: Bench, n: int = 10_000) -> dict[str, Any]:
    """n instances parked on an external event: memory stays bounded because live
    orchestrations beyond the cache size are evicted (and replayed when woken)."""
    before = _rss_mb()
    ids = [await b.start("Waiter", None) for _ in range(n)]
    for iid in ids:  # every instance has run its first turn and now waits
        while (await b.client.get_orchestration_status(iid)).state.value != "RUNNING":
            await asyncio.sleep(0.01)
    parked = _rss_mb()
    cached = len(b.rt._turns._cache)
    t = time.perf_counter()
    for iid in ids:
        await b.client.raise_event(iid, "go", iid)
    for iid in ids:
        assert await b.wait(iid) == iid
    return {f"M {n} waiting instances: RSS growth (MB)": parked - before,
            f"M {n} waiting instances: live orchestrations cached": cached,
            f"M {n} woken and completed (s)": time.perf_counter() - t}


#: the join sizes of the ``fanout`` workload (``--fanout-sizes``)
FANOUT_SIZES: tuple[int, ...] = (2_000, 20_000, 100_000)


async def fanout(b: Bench) -> dict[str, Any]:
    """Joins over ever more activities: the cost per activity should stay flat (nothing
    per completion may grow with the number of open activities), and the memory a join
    holds at its peak (RSS sampled every 20 ms while it runs, above RSS before it)."""
    out: dict[str, Any] = {}
    per: dict[int, float] = {}
    for n in FANOUT_SIZES:
        before = peak = _rss_mb()
        done = asyncio.Event()

        async def sample(done: asyncio.Event = done) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_mb())
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        t = time.perf_counter()
        try:
            assert await b.run("Fan", n) == n
            # (timed before the sampler's last sleep ends)
            per[n] = (time.perf_counter() - t) / n * 1e6
        finally:
            done.set()
            await sampler
        out[f"F fan-out {n:,}: cost per activity (us)"] = per[n]
        out[f"F fan-out {n:,}: peak RSS above start (MB)"] = peak - before
    first, last = FANOUT_SIZES[0], FANOUT_SIZES[-1]
    out[f"F ratio {last:,}/{first:,} per activity"] = per[last] / per[first]
    return out


#: workloads that report memory: each runs in a fresh process of its own unless it is the
#: first this one runs. Memory an earlier workload freed stays with the process (Python's
#: allocator keeps its arenas), and a later workload reusing it would show no growth.
MEMORY_WORKLOADS = frozenset({"fanout", "waiting"})


def _run_alone(kind: str, workload: str) -> list[tuple[str, str, float]]:
    """The rows of ``workload`` on a ``kind`` store, run by this script in a new process
    (its progress goes to this one's stderr)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--store", kind,
           "--workloads", workload,
           "--fanout-sizes", ",".join(str(n) for n in FANOUT_SIZES)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{workload} on {kind} failed in its own process "
                         f"(exit status {done.returncode})")
    rows = []
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] == kind:
            rows.append((kind, cells[1], float(cells[2])))
    if not rows:
        raise SystemExit(f"{workload} on {kind} printed no figures in its own process")
    return rows


WORKLOADS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "scaling": scaling, "idle": idle,
    "waiting": waiting,
}
#: run only when named (``--workloads fanout``): minutes, not seconds
EXTRA_WORKLOADS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
}


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU the processes used so far (Linux's /proc), None elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return None
    return total / tick


def _machine_busy_seconds() -> float | None:
    """CPU time every core of the machine spent busy so far (/proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def scale_out(kind: str, workers: list[int], m: int = 200, k: int = 5
                    ) -> list[tuple[str, str, float]]:
    """W4 with CPU-burning activities, run by N worker processes on one store each."""
    if kind == "memory":
        raise SystemExit("--workers needs a store that processes share: sqlite or postgres")
    rows: list[tuple[str, str, float]] = []
    base: float | None = None
    here = os.path.dirname(os.path.abspath(__file__))
    for n in workers:
        with tempfile.TemporaryDirectory(prefix="duroxy-bench-") as tmp:
            store, cleanup = make_store(kind, tmp)
            url = (f"sqlite:///{store.path}" if kind == "sqlite"  # type: ignore[attr-defined]
                   else f"{PG_DSN}?schema={store.schema}")  # type: ignore[attr-defined]
            client = Client(store)
            await client.list_workers()  # the store exists before the workers open it
            env = {**os.environ, "DUROXY_BENCH_BURN_MS": str(BURN_MS)}
            procs = [subprocess.Popen(
                [sys.executable, "-m", "duroxy", "--store", url, "worker", "run:registries",
                 "--worker-id", f"bench-{i}"], cwd=here, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
            try:
                while len(await client.list_workers()) < n:
                    await asyncio.sleep(0.1)
                bench = Bench(store)
                bench.client = client
                await bench.run("SeqBurn", 1)  # every worker warm enough to start
                pids = [proc.pid for proc in procs]
                workers_cpu, machine_cpu = _cpu_seconds(pids), _machine_busy_seconds()
                t = time.perf_counter()
                ids = [await bench.start("SeqBurn", k) for _ in range(m)]
                for iid in ids:
                    assert await bench.wait(iid) == k
                rate = m / (time.perf_counter() - t)
                workers_after, machine_after = _cpu_seconds(pids), _machine_busy_seconds()
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=30)
                await store.close()
                await cleanup()
        base = base or rate
        label = f"X W4 {m}x{k}, {BURN_MS:g} ms CPU/activity, {n} worker(s)"
        rows.append((kind, f"{label} (orch/s)", rate))
        rows.append((kind, f"{label}: speedup over 1", rate / base))
        cpu = ""
        if None not in (workers_cpu, workers_after, machine_cpu, machine_after):
            # what an orchestration costs the workers, and everything else on the
            # machine meanwhile (the store's server, this client)
            per_worker = (workers_after - workers_cpu) * 1000 / m  # type: ignore[operator]
            per_machine = (machine_after - machine_cpu) * 1000 / m  # type: ignore[operator]
            rows.append((kind, f"{label}: workers' CPU per orchestration (ms)", per_worker))
            rows.append((kind, f"{label}: other CPU per orchestration (ms)",
                         per_machine - per_worker))
            cpu = f"  workers {per_worker:.1f} + other {per_machine - per_worker:.1f} ms CPU/orch"
        print(f"{kind:9} {label:45} {rate:10.2f} orch/s  x{rate / base:.2f}{cpu}",
              file=sys.stderr, flush=True)
    return rows


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="sqlite", help="comma list: sqlite, memory, postgres")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of "
                   + ", ".join(WORKLOADS) + " (the default: all of these), and fanout")
    p.add_argument("--fanout-sizes", help="comma list of join sizes for the fanout "
                   "workload (default 2000,20000,100000)")
    p.add_argument("--workers", help="comma list of worker process counts: runs the "
                   "scale-out benchmark instead (W4 with CPU-burning activities)")
    p.add_argument("--burn-ms", type=float, default=None,
                   help="CPU per activity in the scale-out benchmark, ms (default 2)")
    p.add_argument("--orchestrations", type=int, default=200, metavar="M",
                   help="orchestrations of the scale-out benchmark (default 200)")
    args = p.parse_args(argv)
    if args.workers:
        if args.burn_ms is not None:
            global BURN_MS
            BURN_MS = args.burn_ms
        counts = [int(n) for n in args.workers.split(",")]
        scaled = [r for kind in args.store.split(",")
                  for r in await scale_out(kind, counts, m=args.orchestrations)]
        print("| store | workload | value |\n|---|---|---|")
        for kind, key, value in scaled:
            print(f"| {kind} | {key} | {value:.2f} |")
        return 0
    if args.fanout_sizes:
        global FANOUT_SIZES
        FANOUT_SIZES = tuple(int(n) for n in args.fanout_sizes.split(","))
    every = {**WORKLOADS, **EXTRA_WORKLOADS}
    unknown = [w for w in args.workloads.split(",") if w not in every] + [
        k for k in args.store.split(",") if k not in ("sqlite", "memory", "postgres")]
    if unknown:
        p.error(f"unknown workload or store: {', '.join(unknown)}")
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="duroxy-bench-") as tmp:
        for kind in args.store.split(","):
            for w in args.workloads.split(","):
                if w in MEMORY_WORKLOADS and rows:
                    print(f"{kind:9} {w}: in a process of its own (it measures memory)",
                          file=sys.stderr, flush=True)
                    rows.extend(_run_alone(kind, w))
                    continue
                store, cleanup = make_store(kind, tmp)
                try:
                    async with Bench(store) as b:
                        result = await every[w](b)
                finally:
                    await cleanup()
                for k, v in result.items():
                    rows.append((kind, k, v))
                    print(f"{kind:9} {k:45} {v:10.2f}", file=sys.stderr, flush=True)
    print("| store | workload | value |\n|---|---|---|")
    for kind, k, v in rows:
        print(f"| {kind} | {k} | {v:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

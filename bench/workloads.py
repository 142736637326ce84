"""Workloads A to E: each starts its servers, drives them with load clients and producers, returns figures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .stack import Stack, cpu_seconds, free_port, is_baseline, rss_kb


@dataclass(frozen=True)
class Sizes:
    """How big each workload is: the issue's sizes for a full run, tiny ones for CI."""

    a_watchers: int = 1000
    a_rate: float = 10
    a_count: int = 100
    b_watchers: int = 100
    b_count: int = 2000
    c_tasks: int = 2000
    c_rate: float = 2
    c_count: int = 20
    d_conns: int = 10_000
    d_tasks: int = 1000
    d_heartbeat: float = 5
    d_hold: float = 12
    e_calls: int = 1000
    f_conns: int = 10_000
    f_tasks: int = 1000
    f_count: int = 8
    f_rate: float = 0.5
    f_lead: float = 3
    g_conns: int = 3000
    g_rounds: int = 10
    h_tasks: int = 10
    h_watchers: int = 100
    h_count: int = 100
    h_rate: float = 10
    i_conns: int = 5000
    i_tasks: int = 50
    i_inflight: int = 100
    j_tasks: int = 5000
    clients: int = 2
    drain: float = 30


QUICK = Sizes(
    a_watchers=50,
    a_count=10,
    b_watchers=20,
    b_count=200,
    c_tasks=20,
    c_count=4,
    d_conns=200,
    d_tasks=20,
    d_heartbeat=0.5,
    d_hold=1.5,
    e_calls=100,
    f_conns=200,
    f_tasks=20,
    f_count=4,
    f_rate=1,
    f_lead=1.5,
    g_conns=200,
    g_rounds=3,
    h_tasks=10,
    h_watchers=4,
    h_count=5,
    i_conns=200,
    i_tasks=10,
    j_tasks=200,
    drain=10,
)


def pct(values: list[int], p: float) -> float:
    """The p-th percentile (nearest rank) of a list, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))])


def _split(items: list[str], parts: int) -> list[list[str]]:
    return [chunk for chunk in (items[i::parts] for i in range(parts)) if chunk]


def _servers(stack: Stack, kind: str, count: int, heartbeat: float = 3600) -> list[Any]:
    # The baselines keep their sockets in one process's memory: they cannot be run as two.
    return [stack.server(kind, heartbeat) for _ in range(1 if is_baseline(kind) else count)]


def _init_tasks(stack: Stack, kind: str, tasks: list[str]) -> dict[str, str]:
    """Create the tasks (product servers); the query string each task's watchers connect with."""
    if is_baseline(kind):
        return dict.fromkeys(tasks, "")
    layer = kind.split("+")[1]
    made = stack.result(stack.produce({"target": "product", "tasks": tasks, "init": True}, stack.env(layer)))
    return {task: f"?token={token}" for task, token in made["tokens"].items()}


def _watchers(
    stack: Stack, kind: str, name: str, base: str, conns: int, tasks: int
) -> tuple[list[str], list[str]]:
    """Make ``tasks`` tasks: their ids, and the URLs of ``conns`` watchers of them on ``base``, dealt out
    in turn."""
    ids = [f"{name}-{kind.replace('+', '_')}-{i}" for i in range(tasks)]
    query = _init_tasks(stack, kind, ids)
    return ids, [f"{base}/ws/tasks/{ids[i % tasks]}/{query[ids[i % tasks]]}" for i in range(conns)]


def stream(
    stack: Stack,
    kind: str,
    name: str,
    *,
    tasks: int,
    watchers: int,
    count: int,
    rate: float,
    servers: int = 1,
    clients: int = 2,
    producers: int = 1,
    drain: float = 30,
    by_task: bool = False,
) -> dict[str, Any]:
    """Watchers on ``tasks`` tasks receive ``count`` updates per task; latency, loss and throughput.

    With several servers, a task's watchers are spread over all of them, or with ``by_task`` all on
    one (as nginx's consistent hash on the task id puts them; here tasks are dealt out evenly).
    """
    procs = _servers(stack, kind, servers)
    try:
        ids = [f"{name}-{kind.replace('+', '_')}-{i}" for i in range(tasks)]
        query = _init_tasks(stack, kind, ids)
        urls = [
            f"{procs[(n if by_task else w) % len(procs)][1]}/ws/tasks/{t}/{query[t]}"
            for n, t in enumerate(ids)
            for w in range(watchers)
        ]
        # Measured from when every watcher is in sync: the baselines send nothing on connect.
        loads = [stack.load(chunk, synced=not is_baseline(kind)) for chunk in _split(urls, clients)]
        for load in loads:
            stack.wait_ready(load)
        if is_baseline(kind):
            env, target = stack.env(), procs[0][1]
        else:
            env, target = stack.env(kind.split("+")[1]), "product"
        cpu_before = sum(cpu_seconds(p.pid) for p, _ in procs)
        redis_pid = stack.redis_proc.pid if stack.redis_proc is not None else 0
        redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
        pubs = [
            stack.produce({"target": target, "tasks": chunk, "count": count, "rate": rate}, env)
            for chunk in _split(ids, producers)
        ]
        made = [stack.result(p) for p in pubs]
        got = [stack.finish(load, drain) for load in loads]
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - cpu_before
        redis_cpu = cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
    finally:
        for proc, _ in procs:
            stack.stop(proc)
    latencies = [v for g in got for v in g["latencies_us"]]
    received = [r for g in got for r in g["received"]]
    start, end = min(m["start"] for m in made), max(m["end"] for m in made)
    last = max(g["last"] for g in got)
    delivered = sum(received)
    return {
        "watchers": sum(g["watchers"] for g in got),
        "connected": sum(g["connected"] for g in got),
        "p50_ms": pct(latencies, 50) / 1000,
        "p99_ms": pct(latencies, 99) / 1000,
        "max_ms": pct(latencies, 100) / 1000,
        "delivered": delivered,
        "lost": sum(max(0, count - r) for r in received) + count * sum(g["failed"] for g in got),
        "disorder": sum(g["disorder"] for g in got),
        "msgs_per_s": delivered / max(1e-6, last - start),
        # Server CPU per delivered frame: what the design costs, whatever else shares the machine.
        "cpu_us_per_msg": 1e6 * cpu / max(1, delivered),
        "drain_s": max(0.0, last - end),
        "publish_s": end - start,
        "producer_lag_s": max(m["max_lag_s"] for m in made),
        "servers": len(procs),
        "updates": sum(m["calls"] for m in made),
        # Redis's CPU per published update: it should grow with server processes, not with watchers.
        "redis_cpu_us_per_update": 1e6 * redis_cpu / max(1, sum(m["calls"] for m in made)),
        "producer_cpu_us": sum(m["cpu_us_per_call"] * m["calls"] for m in made)
        / max(1, sum(m["calls"] for m in made)),
    }


def idle(
    stack: Stack,
    kind: str,
    name: str,
    *,
    conns: int,
    tasks: int,
    heartbeat: float,
    hold: float,
    clients: int = 2,
) -> dict[str, Any]:
    """Hold ``conns`` quiet sockets on one server with heartbeats on: memory per socket, beats on time."""
    procs = _servers(stack, kind, 1, heartbeat)
    proc = procs[0][0]
    try:
        _, urls = _watchers(stack, kind, name, procs[0][1], conns, tasks)
        # One socket first, so the code every socket uses is loaded before the baseline is read.
        warm = stack.load(urls[:1])
        stack.wait_ready(warm)
        stack.finish(warm, 0)
        time.sleep(0.5)
        before = rss_kb(proc.pid)
        loads = [stack.load(chunk, concurrency=200) for chunk in _split(urls, clients)]
        for load in loads:
            stack.wait_ready(load)
        connected_rss = rss_kb(proc.pid)
        got = [stack.finish(load, hold) for load in loads]
        held_rss = rss_kb(proc.pid)
    finally:
        stack.stop(proc)
    connected = sum(g["connected"] for g in got)
    gaps = [gap for g in got for gap in g["max_heartbeat_gaps"]]
    on_time = sum(1 for gap in gaps if gap <= heartbeat * 1.5)
    return {
        "watchers": conns,
        "connected": connected,
        "failed": sum(g["failed"] for g in got),
        "connect_s": max(g["connect_s"] for g in got),
        "kb_per_conn": (max(connected_rss, held_rss) - before) / max(1, connected),
        "rss_mb": max(connected_rss, held_rss) / 1024,
        "heartbeats": sum(g["heartbeats"] for g in got),
        "on_time_pct": 100 * on_time / max(1, len(gaps)),
        "max_gap_s": max(gaps, default=0.0),
    }


def report_cost(stack: Stack, kind: str, name: str, *, calls: int) -> dict[str, Any]:
    """The cost of one sync report_progress call, durable write and hand-off to the sender included.

    ``kind`` is the layer and the pace: "pubsub 200/s" (a busy worker: the previous call's fan-out is
    done before the next call) or "pubsub flat out" (back to back: the sender thread competes).
    """
    layer = kind.split()[0]
    rate = float(kind.split()[1].removesuffix("/s")) if kind.endswith("/s") else 0.0
    task = f"{name}-{layer}-{'paced' if rate else 'flat'}"
    env = stack.env(layer)
    stack.result(stack.produce({"target": "product", "tasks": [task], "init": True}, env))
    config = {"target": "product", "tasks": [task], "count": calls, "rate": rate}
    made = stack.result(stack.produce(config, env))
    costs = made["costs_us"]
    return {
        "calls": len(costs),
        "p50_us": pct(costs, 50),
        "p99_us": pct(costs, 99),
        "max_us": pct(costs, 100),
        "calls_per_s": len(costs) / max(1e-6, made["end"] - made["start"]),
        "cpu_us_per_call": made["cpu_us_per_call"],
    }


def storm(
    stack: Stack,
    kind: str,
    name: str,
    *,
    conns: int,
    tasks: int,
    count: int,
    rate: float,
    lead: float,
    clients: int = 2,
    drain: float = 60,
) -> dict[str, Any]:
    """``conns`` watchers of ``tasks`` tasks; the server is restarted while the tasks pass their stages.

    Every client reconnects with jitter and backoff (the product's with ``?last_seq=``). Figures: how
    long from the restart until every socket was back, and the stages that some watcher never saw.
    """
    baseline = is_baseline(kind)
    port = free_port()
    proc, base = stack.server(kind, port=port)
    try:
        ids, urls = _watchers(stack, kind, name, base, conns, tasks)
        options = {"reconnect": True, "resume": not baseline}
        loads = [
            stack.load(chunk, concurrency=200, synced=not baseline, **options)
            for chunk in _split(urls, clients)
        ]
        for load in loads:
            stack.wait_ready(load)
        env, target = (stack.env(), base) if baseline else (stack.env(kind.split("+")[1]), "product")
        pubs = [
            stack.produce(
                {"target": target, "tasks": chunk, "count": count, "rate": rate, "staged": True}, env
            )
            for chunk in _split(ids, 2)
        ]
        time.sleep(lead)  # the first stage goes out to every watcher, then the deploy
        restarted = time.time()
        stack.stop(proc)  # SIGTERM: the product closes every socket with 1012 before it exits
        proc, _ = stack.server(kind, port=port)
        listening = time.time()
        made = [stack.result(p) for p in pubs]
        got = [stack.finish(load, drain) for load in loads]
    finally:
        stack.stop(proc)
    back = [at for g in got for at in g["back_at"]]
    stages = [set(s) for g in got for s in g["stages"]]
    expected = {"transcribing", "aligning", "diarizing", "complete"}
    return {
        "watchers": conns,
        "connected": sum(g["connected"] for g in got),
        "restart_s": listening - restarted,
        "resumed": sum(1 for at in back if at),
        "storm_s": (max(back) if back and all(back) else time.time()) - restarted,
        "reconnects": sum(g["reconnects"] for g in got),
        "stages_missed": sum(len(expected - seen) for seen in stages),
        "finals": sum(g["finals"] for g in got),
        "producer_calls": sum(m["calls"] for m in made),
    }


def churn(stack: Stack, kind: str, name: str, *, conns: int, rounds: int, tasks: int) -> dict[str, Any]:
    """``rounds`` times ``conns`` sockets connect (each gets its snapshot) and all close; RSS after each."""
    procs = _servers(stack, kind, 1)
    proc, base = procs[0]
    try:
        _, urls = _watchers(stack, kind, name, base, conns, tasks)
        before = rss_kb(proc.pid)
        after: list[int] = []
        for _ in range(rounds):
            load = stack.load(urls, concurrency=200, synced=not is_baseline(kind))
            stack.wait_ready(load)
            stack.finish(load, 0)
            time.sleep(1.0)  # the server notices the closes and ends the consumers
            after.append(rss_kb(proc.pid))
    finally:
        stack.stop(proc)
    return {
        "connected": conns,
        "rss_before_mb": before / 1024,
        "rss_first_mb": after[0] / 1024,
        "rss_last_mb": after[-1] / 1024,
        "growth_pct": 100 * (after[-1] - after[0]) / max(1, after[0]),
        "rss_rounds_mb": [round(a / 1024, 1) for a in after],
    }


def connects(
    stack: Stack, kind: str, name: str, *, conns: int, tasks: int, inflight: int, clients: int = 2
) -> dict[str, Any]:
    """``conns`` watchers of ``tasks`` tasks connect to one server, ``inflight`` handshakes at a time.

    "open" is when the handshake completed; the product's watcher is "in sync" once its snapshot
    arrived too (the seed sends nothing until the next update: its browser shows nothing till then).
    """
    procs = _servers(stack, kind, 1)
    proc, base = procs[0]
    try:
        _, urls = _watchers(stack, kind, name, base, conns, tasks)
        warm = stack.load(urls[:1], synced=not is_baseline(kind))
        stack.wait_ready(warm)
        stack.finish(warm, 0)
        cpu_before = cpu_seconds(proc.pid)
        loads = [
            stack.load(chunk, concurrency=max(1, inflight // clients), synced=not is_baseline(kind))
            for chunk in _split(urls, clients)
        ]
        for load in loads:
            stack.wait_ready(load)
        cpu = cpu_seconds(proc.pid) - cpu_before
        got = [stack.finish(load, 0) for load in loads]
    finally:
        stack.stop(proc)
    opened = sorted(at for g in got for at in g["opened_at"] if at)
    synced = sorted(at for g in got for at in g["connected_at"] if at)
    if not opened:
        raise RuntimeError(f"no socket opened: {[g['errors'] for g in got]}")
    start = min(g["started"] for g in got)
    return {
        "watchers": conns,
        "connected": len(synced),
        "failed": sum(g["failed"] for g in got),
        "connects_per_s": len(opened) / max(1e-6, opened[-1] - start),
        "synced_per_s": len(synced) / max(1e-6, synced[-1] - start) if synced else 0.0,
        "all_open_s": opened[-1] - start,
        "cpu_ms_per_connect": 1000 * cpu / max(1, len(opened)),
    }

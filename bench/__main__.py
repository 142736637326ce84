"""``python -m bench [--quick] [--only ABCDE] [--servers ...]``: run the workloads, print the table."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import workloads
from .report import table
from .stack import BASELINES, Stack

# The product configurations each workload compares; the expensive ones run only the chosen few.
# The product as deployed (uvicorn with websockets' sans-I/O protocol, RedisPubSubChannelLayer) in
# every workload; the alternatives measured where they are cheap to run.
CHOSEN = "uvicorn-sansio+pubsub"
FULL_SERVERS = {
    "A": [*BASELINES, CHOSEN, "uvicorn+pubsub", "daphne+pubsub", "uvicorn-sansio+core"],
    "B": [*BASELINES, CHOSEN, "uvicorn+pubsub", "daphne+pubsub", "uvicorn-sansio+core"],
    "C": [*BASELINES, CHOSEN],
    "D": [*BASELINES, CHOSEN],
    "E": ["pubsub 200/s", "pubsub flat out", "core 200/s", "core flat out"],
    "F": ["seed", "dict", CHOSEN],
    "G": ["seed", "dict", CHOSEN],
    "H": [CHOSEN],
    "I": ["seed", "seed-sansio", "dict", CHOSEN, "uvicorn+pubsub"],
    "J": ["seed", "seed-sansio", "dict", CHOSEN, "uvicorn+pubsub"],
}
QUICK_SERVERS = {
    "A": [*BASELINES, CHOSEN],
    "B": [*BASELINES, CHOSEN],
    "C": [*BASELINES, CHOSEN],
    "D": [*BASELINES, CHOSEN],
    "E": ["pubsub 200/s", "pubsub flat out"],
    "F": ["seed", CHOSEN],
    "G": ["seed", CHOSEN],
    "H": [CHOSEN],
    "I": ["seed", CHOSEN],
    "J": ["seed", CHOSEN],
}


def _record(results: dict[str, dict[str, dict[str, Any]]], workload: str, key: str, measure: Any) -> None:
    """Run one cell; a failure records its error instead of figures."""
    started = time.monotonic()
    try:
        r: dict[str, Any] = measure()
    except Exception as exc:
        traceback.print_exc()
        r = {"error": repr(exc)[:200]}
    r["seconds"] = time.monotonic() - started
    results[workload][key] = r
    print(f"bench: {workload} {key} done in {r['seconds']:.1f} s", file=sys.stderr, flush=True)


def on_postgres(stack: Stack, measure: Any) -> dict[str, Any]:
    """``measure()`` with every product process on a throwaway PostgreSQL cluster instead of SQLite."""
    from tests.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    sqlite = stack.db_url
    try:
        stack.db_url = server.create_database("bench")
        stack.migrate()
        result: dict[str, Any] = measure()
        return result
    finally:
        stack.db_url = sqlite
        server.stop()


def scale_out(stack: Stack, s: workloads.Sizes, count: int, by_task: bool = False) -> dict[str, Any]:
    """Workload H with ``count`` server processes and two producers (``by_task``: routed by task)."""
    return workloads.stream(
        stack,
        CHOSEN,
        f"h{count}{'r' if by_task else ''}",
        by_task=by_task,
        tasks=s.h_tasks,
        watchers=s.h_watchers,
        count=s.h_count,
        rate=s.h_rate,
        servers=count,
        producers=2,
        clients=s.clients,
        drain=s.drain,
    )


def run(
    sizes: workloads.Sizes,
    servers: dict[str, list[str]],
    only: str,
    workdir: Path,
    quick: bool = False,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Run the selected workloads on every selected server; a failed cell records its error."""
    results: dict[str, dict[str, dict[str, Any]]] = {w: {} for w in "ABCDEFGHIJ" if w in only}
    stack = Stack(workdir)
    s = sizes
    # The three fan-out workloads differ only in shape: tasks, watchers each, updates and pace.
    streams: dict[str, dict[str, Any]] = {
        "A": {"tasks": 1, "watchers": s.a_watchers, "count": s.a_count, "rate": s.a_rate},
        "B": {"tasks": 1, "watchers": s.b_watchers, "count": s.b_count, "rate": 0},
        "C": {
            "tasks": s.c_tasks,
            "watchers": 2,
            "count": s.c_count,
            "rate": s.c_rate,
            "servers": 2,
            "producers": 2,
        },
    }
    try:
        stack.start_redis()
        stack.migrate()
        for workload in results:
            if workload == "H":
                for count in (1, 2, 4):
                    _record(results, "H", f"{CHOSEN} x{count}", functools.partial(scale_out, stack, s, count))
                    if count > 1:
                        routed = functools.partial(scale_out, stack, s, count, by_task=True)
                        _record(results, "H", f"{CHOSEN} x{count} by task", routed)
                continue
            if workload == "C" and CHOSEN in servers["C"] and not quick:
                c_on_postgres = functools.partial(
                    workloads.stream, stack, CHOSEN, "cpg", clients=s.clients, drain=s.drain, **streams["C"]
                )
                _record(
                    results, "C", f"{CHOSEN} PostgreSQL", functools.partial(on_postgres, stack, c_on_postgres)
                )
            for kind in servers[workload]:
                name = workload.lower()
                started = time.monotonic()
                try:
                    if workload in streams:
                        r = workloads.stream(
                            stack, kind, name, clients=s.clients, drain=s.drain, **streams[workload]
                        )
                    elif workload == "D":
                        r = workloads.idle(
                            stack,
                            kind,
                            name,
                            conns=s.d_conns,
                            tasks=s.d_tasks,
                            heartbeat=s.d_heartbeat,
                            hold=s.d_hold,
                            clients=s.clients,
                        )
                    elif workload == "F":
                        r = workloads.storm(
                            stack,
                            kind,
                            name,
                            conns=s.f_conns,
                            tasks=s.f_tasks,
                            count=s.f_count,
                            rate=s.f_rate,
                            lead=s.f_lead,
                            clients=s.clients,
                            drain=s.drain,
                        )
                    elif workload in "IJ":
                        tasks = s.i_tasks if workload == "I" else s.j_tasks
                        r = workloads.connects(
                            stack, kind, name, conns=s.i_conns, tasks=tasks, inflight=s.i_inflight
                        )
                    elif workload == "G":
                        r = workloads.churn(
                            stack, kind, name, conns=s.g_conns, rounds=s.g_rounds, tasks=s.d_tasks
                        )
                    else:
                        r = workloads.report_cost(stack, kind, name, calls=s.e_calls)
                except Exception as exc:
                    traceback.print_exc()
                    r = {"error": repr(exc)[:200]}
                r["seconds"] = time.monotonic() - started
                results[workload][kind] = r
                print(f"bench: {workload} {kind} done in {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    finally:
        stack.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, print the table (and the figures as JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one product server (CI)")
    parser.add_argument("--only", default="ABCDEFGHIJ", help="workloads to run, e.g. AB")
    parser.add_argument("--servers", help="comma-separated server kinds for A-D (default: per workload)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SIZE=N", help="override a size, e.g. d_conns=3000"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 sockets need more than 1,024
    sizes = workloads.QUICK if args.quick else workloads.Sizes()
    overrides = dict(item.split("=", 1) for item in args.set)
    sizes = dataclasses.replace(sizes, **{k: type(getattr(sizes, k))(v) for k, v in overrides.items()})
    servers = dict(QUICK_SERVERS if args.quick else FULL_SERVERS)
    if args.servers:
        chosen = args.servers.split(",")
        servers.update({w: chosen for w in "ABCDFGIJ"})
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.monotonic()
    try:
        results = run(sizes, servers, args.only.upper(), workdir, args.quick)
    finally:
        if args.keep:
            print(f"bench: work directory kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results, dataclasses.asdict(sizes)))
    print(f"\n{'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"sizes": dataclasses.asdict(sizes), "results": results}, indent=1))
    failed = [f"{w}/{k}" for w, rows in results.items() for k, r in rows.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A producer process: reports progress on a schedule and prints what each call cost, as JSON.

``python -m bench.producer CONFIG_FILE``. Target ``product`` calls ``progress.report_progress`` (sync,
like a Celery worker; the environment selects the database and the Redis layer); a ``ws://`` target
sends the same frames to a baseline server's /pub/<task>/ socket. Every update's message carries the
publish time, ``t=<epoch seconds>``, which the load clients subtract from the arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from websockets.typing import Origin

ORIGIN = Origin("http://127.0.0.1")


def schedule(tasks: list[str], count: int, rate: float) -> list[tuple[float, str, int]]:
    """(offset seconds, task, update number 1..count) in send order; rate 0 means as fast as possible."""
    plan = []
    for j, task in enumerate(tasks):
        for i in range(1, count + 1):
            at = (i - 1) / rate + j / (rate * len(tasks)) if rate > 0 else 0.0
            plan.append((at, task, i))
    plan.sort(key=lambda p: (p[0], p[2]))
    return plan


def update(i: int, count: int, staged: bool = False) -> tuple[str, int]:
    """Stage and percentage of update i: transcribing (``staged``: aligning, diarizing too), then complete."""
    if i == count:
        return "complete", 100
    stage = "transcribing"
    if staged:
        stage = STAGED[min(len(STAGED) - 1, (i - 1) * len(STAGED) // max(1, count - 1))]
    return stage, min(99, i * 100 // count)


STAGED = ("transcribing", "aligning", "diarizing")
"""The stages a ``staged`` run passes through before complete: a watcher must see every one."""


def _summary(costs_ns: list[int], started: float, lag: float, cpu_s: float) -> dict[str, Any]:
    return {
        "calls": len(costs_ns),
        # The process's CPU (every thread: the publisher's too) per call, whatever shares the machine.
        "cpu_us_per_call": 1e6 * cpu_s / max(1, len(costs_ns)),
        "costs_us": [c // 1000 for c in costs_ns],
        "start": started,
        "end": time.time(),
        "max_lag_s": lag,
    }


def run_product(config: dict[str, Any]) -> dict[str, Any]:
    """Report through the product's public API, from plain sync code."""
    import django

    django.setup()
    from progress import publish, report_progress, watch_token

    tasks: list[str] = config["tasks"]
    if config.get("init"):
        for task in tasks:
            report_progress(task, "queued", 0)
        publish.wait_until_sent(30)
        # Watchers need a token, as any client that is not the task's owner does.
        return {"calls": len(tasks), "tokens": {task: watch_token(task) for task in tasks}}
    plan = schedule(tasks, config["count"], config["rate"])
    # Warm, as a long-running worker is: the first call opens the database and Redis connections and
    # starts the publisher thread (~70 ms), which would otherwise land in the first update's latency.
    # Not "queued": a task joining the line would tell every waiting task its place, the measured
    # ones too, in the middle of their first update.
    report_progress(f"warm-up-{os.getpid()}", "transcribing", 0)
    publish.wait_until_sent(30)
    costs: list[int] = []
    lag = 0.0
    started = time.time()
    cpu = time.process_time()
    base = time.perf_counter()
    for at, task, i in plan:
        delay = at - (time.perf_counter() - base)
        if delay > 0:
            time.sleep(delay)
        else:
            lag = max(lag, -delay)
        stage, pct = update(i, config["count"], bool(config.get("staged")))
        before = time.perf_counter_ns()
        report_progress(task, stage, pct, f"t={time.time():.6f}")
        costs.append(time.perf_counter_ns() - before)
    publish.wait_until_sent(60)
    return _summary(costs, started, lag, time.process_time() - cpu)


async def _reconnect(url: str) -> Any:
    """A publishing socket to a baseline server that is restarting: retried for up to a minute."""
    from websockets.asyncio.client import connect

    for _ in range(600):
        try:
            return await connect(url, origin=ORIGIN, compression=None)
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"could not reconnect to {url}")


async def run_ws(config: dict[str, Any]) -> dict[str, Any]:
    """Send the same frames to a baseline server, one socket per task."""
    from websockets.asyncio.client import connect

    tasks: list[str] = config["tasks"]
    base_url = config["target"]
    sockets = {t: await connect(f"{base_url}/pub/{t}/", origin=ORIGIN, compression=None) for t in tasks}
    plan = schedule(tasks, config["count"], config["rate"])
    costs: list[int] = []
    lag = 0.0
    loop = asyncio.get_running_loop()
    started = time.time()
    cpu = time.process_time()
    base = loop.time()
    for n, (at, task, i) in enumerate(plan):
        delay = at - (loop.time() - base)
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the sockets' writes proceed when sending flat out
        stage, pct = update(i, config["count"], bool(config.get("staged")))
        before = time.perf_counter_ns()
        text = json.dumps(
            {
                "type": "progress",
                "task_id": task,
                "seq": i,
                "attempt": 1,
                "stage": stage,
                "percentage": pct,
                "message": f"t={time.time():.6f}",
                "timestamp": datetime.now(UTC).isoformat(),
            },
            separators=(",", ":"),
        )
        try:
            await sockets[task].send(text)
        except Exception:  # the server restarted (workload F): reconnect and send again
            sockets[task] = await _reconnect(f"{base_url}/pub/{task}/")
            await sockets[task].send(text)
        costs.append(time.perf_counter_ns() - before)
    cpu = time.process_time() - cpu
    for ws in sockets.values():
        with contextlib.suppress(Exception):
            await ws.close()
    return _summary(costs, started, lag, cpu)


def main() -> None:
    """Entry point: the argument names a JSON config file; results go to its ``out`` file."""
    with open(sys.argv[1]) as f:
        config = json.load(f)
    if config["target"] == "product":
        result = run_product(config)
    else:
        import uvloop

        result = uvloop.run(run_ws(config))
    with open(config["out"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()

"""Prometheus metrics, at ``GET /metrics``: every server process, worker and producer adds up.

With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's own variable; every process of a deployment
shares the directory), each process writes its figures there and ``/metrics`` sums them all; without it,
``/metrics`` shows this process only. Per-frame counts are kept in a plain integer and added to the
counter at most once a second, and the fan-out lag is observed once per message per process, so the
fan-out path pays no lock or file write per frame.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .openapi import Media, Operation, operation

__all__ = ["frame_sent", "metrics_view"]

CONNECTIONS = Gauge("progress_websocket_connections", "WebSockets open now.", multiprocess_mode="livesum")
CLOSES = Counter("progress_websocket_closes_total", "WebSockets closed, by close code.", ["code"])
FRAMES = Counter("progress_frames_sent_total", "Progress and error frames sent to watchers.")
REPORTS = Counter(
    "progress_reports_total",
    "Reports by outcome: accepted, coalesced, stale, repeat, final (and failed: not stored).",
    ["outcome"],
)
REPORT_SECONDS = Histogram(
    "progress_report_seconds",
    "A report from the call to its hand-off to the sender (stored, fan-out queued).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
FANOUT_LAG = Histogram(
    "progress_fanout_lag_seconds",
    "From a report's hand-off to its frame being sent to a watcher, measured on the server.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
REAPED = Counter("progress_tasks_reaped_total", "Running tasks failed because their job went quiet.")
WEBHOOKS = Counter(
    "progress_webhook_tries_total",
    "Webhook tries, by what came of them (delivered, retried, given_up).",
    ["outcome"],
)
LAYER_ERRORS = Counter("progress_layer_errors_total", "Channel-layer operations that failed.")
SENDER_QUEUE = Gauge(
    "progress_sender_queue", "Group messages waiting in this process's sender.", multiprocess_mode="livesum"
)
SENDER_DROPPED = Counter(
    "progress_sender_dropped_total", "Group messages dropped by a full sender queue (watchers recover)."
)

_frames = 0
_frames_flushed_at = 0.0
FLUSH_SECONDS = 1.0


def frame_sent(event: dict[str, Any]) -> None:
    """Count one live frame sent to a watcher; its fan-out lag once per message per process."""
    global _frames
    _frames += 1
    published_at = event.get("at")
    if published_at is not None and "lag_observed" not in event:
        # A pushing layer hands one dict to every socket of the process: the first send stands for all.
        event["lag_observed"] = True
        FANOUT_LAG.observe(max(0.0, time.time() - published_at))
    now = time.monotonic()
    if now - _frames_flushed_at >= FLUSH_SECONDS:
        flush_frames(now)


def flush_frames(now: float | None = None) -> None:
    """Add the frames counted since the last flush to the shared counter."""
    global _frames, _frames_flushed_at
    if _frames:
        FRAMES.inc(_frames)
        _frames = 0
    _frames_flushed_at = time.monotonic() if now is None else now


def process_exiting() -> None:
    """This process stops: its live gauges (open sockets, sender queue) leave the multiprocess sums."""
    flush_frames()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _TaskCounts(Collector):
    """progress_tasks{status}: read from the database at scrape time (once per scrape, not per process)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from .models import Task

        family = GaugeMetricFamily("progress_tasks", "Tasks by status.", labels=["status"])
        counts = dict(
            Task.objects.values_list("status").annotate(n=Count("task_id")).values_list("status", "n")
        )
        for status in ("running", "complete", "failed"):
            family.add_metric([status], counts.get(status, 0))
        yield family


@operation(Operation("GET", "Prometheus metrics", {200: Media("text/plain", "the metrics")}, auth=()))
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the exposition text of every process (multiprocess mode) or of this one."""
    flush_frames()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry)
    body += generate_latest(_task_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


_task_registry = CollectorRegistry()
_task_registry.register(_TaskCounts())

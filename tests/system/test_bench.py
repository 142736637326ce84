"""The benchmark's tiny CI configuration, run for real so it cannot rot: figures printed, never timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import CHOSEN, QUICK_SERVERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m bench --quick`` once for this module: its table is printed, its figures returned."""
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    print(run.stdout)
    print(run.stderr[-3000:], file=sys.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())["results"]
    return results


def test_bench_quick_every_workload_has_figures_for_every_server(quick_run):
    assert set(quick_run) == set("ABCDEFGHIJ")
    for workload, servers in QUICK_SERVERS.items():
        routed = {f"{CHOSEN} x{n} by task" for n in (2, 4)}
        expected = {f"{CHOSEN} x{n}" for n in (1, 2, 4)} | routed if workload == "H" else set(servers)
        assert set(quick_run[workload]) == expected, workload
        for server, figures in quick_run[workload].items():
            assert "error" not in figures, (workload, server, figures.get("error"))


@pytest.mark.parametrize("workload", ["A", "B", "C"])
def test_bench_quick_streams_lose_nothing(quick_run, workload):
    for server, figures in quick_run[workload].items():
        assert figures["connected"] == figures["watchers"], (workload, server)
        assert figures["lost"] == 0, (workload, server)
        assert figures["disorder"] == 0, (workload, server)
        assert figures["delivered"] > 0, (workload, server)


def test_bench_quick_idle_sockets_all_held_with_heartbeats(quick_run):
    for server, figures in quick_run["D"].items():
        assert figures["connected"] == figures["watchers"], server
        assert figures["heartbeats"] >= figures["connected"], server
        assert figures["kb_per_conn"] > 0, server


def test_bench_quick_report_cost_measured_every_call(quick_run):
    for kind, figures in quick_run["E"].items():
        assert figures["calls"] > 0, kind
        assert figures["p50_us"] > 0, kind


def test_bench_quick_reconnect_storm_product_misses_no_stage(quick_run):
    product = quick_run["F"][CHOSEN]
    assert product["resumed"] == product["connected"] == product["watchers"]
    assert product["stages_missed"] == 0
    assert product["finals"] == product["watchers"]


def test_bench_quick_churn_measures_every_round(quick_run):
    for server, figures in quick_run["G"].items():
        assert len(figures["rss_rounds_mb"]) >= 2, server
        assert figures["rss_first_mb"] >= figures["rss_before_mb"] > 0, server


def test_bench_quick_scale_out_loses_nothing_on_any_process_count(quick_run):
    for key, figures in quick_run["H"].items():
        assert figures["servers"] == int(key.rsplit("x", 1)[1].split()[0]), key
        assert figures["lost"] == 0, key
        assert figures["delivered"] > 0, key
        assert "redis_cpu_us_per_update" in figures, key  # /proc counts 10 ms ticks: may be 0 this small


@pytest.mark.parametrize("workload", ["I", "J"])
def test_bench_quick_connect_rate_opens_every_socket(quick_run, workload):
    assert "seed" in quick_run[workload]
    for server, figures in quick_run[workload].items():
        assert figures["connected"] == figures["watchers"], server
        assert figures["failed"] == 0, server
        assert figures["connects_per_s"] > 0, server

"""The printed table: every figure beside the baselines' from the same run, as a ratio."""

from __future__ import annotations

from typing import Any

# Per workload: (figure key, column label, format).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "A": [
        ("p50_ms", "p50 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("lost", "lost", "{:d}"),
        ("connected", "conns", "{:d}"),
    ],
    "B": [
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("drain_s", "drain s", "{:.2f}"),
        ("publish_s", "publish s", "{:.2f}"),
        ("cpu_us_per_msg", "CPU µs/msg", "{:.1f}"),
        ("lost", "lost", "{:d}"),
    ],
    "C": [
        ("p50_ms", "p50 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("lost", "lost", "{:d}"),
        ("producer_lag_s", "prod. lag s", "{:.2f}"),
        ("producer_cpu_us", "prod. CPU µs", "{:.0f}"),
    ],
    "D": [
        ("connected", "conns", "{:d}"),
        ("kb_per_conn", "KB/conn", "{:.1f}"),
        ("rss_mb", "RSS MB", "{:.0f}"),
        ("on_time_pct", "beats on time %", "{:.1f}"),
        ("max_gap_s", "max gap s", "{:.1f}"),
        ("connect_s", "connect s", "{:.1f}"),
    ],
    "E": [
        ("p50_us", "p50 µs", "{:.0f}"),
        ("p99_us", "p99 µs", "{:.0f}"),
        ("max_us", "max µs", "{:.0f}"),
        ("calls_per_s", "calls/s", "{:,.0f}"),
        ("cpu_us_per_call", "CPU µs/call", "{:.0f}"),
    ],
    "F": [
        ("connected", "conns", "{:d}"),
        ("restart_s", "restart s", "{:.1f}"),
        ("storm_s", "all back s", "{:.1f}"),
        ("resumed", "back", "{:d}"),
        ("reconnects", "reconnects", "{:d}"),
        ("stages_missed", "stages missed", "{:d}"),
    ],
    "H": [
        ("servers", "processes", "{:d}"),
        ("msgs_per_s", "frames/s", "{:,.0f}"),
        ("cpu_us_per_msg", "CPU µs/frame", "{:.1f}"),
        ("redis_cpu_us_per_update", "Redis µs/update", "{:.0f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("lost", "lost", "{:d}"),
    ],
    "I": [
        ("connected", "conns", "{:d}"),
        ("connects_per_s", "open/s", "{:,.0f}"),
        ("synced_per_s", "in sync/s", "{:,.0f}"),
        ("all_open_s", "all open s", "{:.2f}"),
        ("cpu_ms_per_connect", "CPU ms/conn", "{:.2f}"),
        ("failed", "failed", "{:d}"),
    ],
    "G": [
        ("rss_before_mb", "RSS before MB", "{:.0f}"),
        ("rss_first_mb", "after 1st MB", "{:.0f}"),
        ("rss_last_mb", "after last MB", "{:.0f}"),
        ("growth_pct", "growth %", "{:.1f}"),
    ],
}
# The figure each workload is judged by, compared with the baselines as a ratio.
KEY = {
    "A": "p99_ms",
    "B": "msgs_per_s",
    "C": "p99_ms",
    "D": "kb_per_conn",
    "F": "storm_s",
    "G": "rss_last_mb",
    "I": "connects_per_s",
    "J": "connects_per_s",
}
TITLES = {
    "A": "A  1 task x {a_watchers} watchers, {a_rate:g} updates/s, {a_count} updates "
    "(target p99 < 50 ms and <= 1.0 x seed, 0 lost)",
    "B": "B  1 task x {b_watchers} watchers, {b_count} updates flat out (target >= 0.5 x dict msgs/s)",
    "C": "C  {c_tasks} tasks x 2 watchers, {c_rate:g} updates/s each, 2 server processes "
    "(target p99 < 100 ms, 0 lost)",
    "D": "D  {d_conns} idle sockets on one process, heartbeat every {d_heartbeat:g} s, held {d_hold:g} s "
    "(target < 30 KB/conn)",
    "E": "E  one sync report_progress call, durable write included, {e_calls} calls (target p99 < 1000 µs)",
    "F": "F  reconnect storm: {f_conns} sockets on {f_tasks} tasks, the server restarted while they pass "
    "their stages (target 0 stages missed)",
    "H": "H  scale-out: {h_tasks} tasks x {h_watchers} watchers, {h_rate:g} updates/s each, two producers, "
    "1, 2 and 4 server processes sharing Redis; a task's watchers spread over every process, or "
    '"by task" all on one (nginx\'s consistent hash on the task id)',
    "I": "I  connect rate: {i_conns} sockets over {i_tasks} tasks, {i_inflight} handshakes in flight "
    "(target >= 1.0 x seed)",
    "J": "J  connect rate, one watcher per task: {i_conns} sockets over {j_tasks} tasks, {i_inflight} "
    "handshakes in flight (target >= 1.0 x seed)",
    "G": "G  memory under churn: {g_rounds} rounds of {g_conns} sockets connecting and closing "
    "(target: last round within 10% of the first)",
}


# The baselines each judged figure is divided by: the seed design first, the one to beat.
RATIOS = (("seed", 8), ("dict", 8), ("broadcast", 12))


def _fmt(fmt: str, value: Any) -> str:
    return fmt.format(int(value)) if fmt == "{:d}" else fmt.format(value)


def table(results: dict[str, dict[str, dict[str, Any]]], sizes: dict[str, Any]) -> str:
    """Render ``results[workload][server] = figures`` as plain-text tables."""
    lines: list[str] = []
    for workload, rows in results.items():
        if not rows:
            continue
        lines.append("")
        lines.append(TITLES[workload].format(**sizes))
        cols = COLUMNS["I" if workload == "J" else workload]
        key = KEY.get(workload)
        header = [f"{'server':<32}"] + [f"{label:>15}" for _, label, _ in cols]
        if key:
            header += [f"{'x ' + base:>{width}}" for base, width in RATIOS]
        lines.append(" ".join(header))
        for server, figures in rows.items():
            if "error" in figures:
                lines.append(f"{server:<32} failed: {figures['error']}")
                continue
            cells = [f"{server:<32}"] + [f"{_fmt(fmt, figures[k]):>15}" for k, _, fmt in cols]
            if key:
                for base, width in RATIOS:
                    ref = rows.get(base, {}).get(key)
                    ratio = figures[key] / ref if ref else None
                    cells.append(f"{ratio:>{width}.2f}" if ratio is not None else f"{'-':>{width}}")
            lines.append(" ".join(cells))
    return "\n".join(lines)

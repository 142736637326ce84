"""The bench's printed tables: judged figures as ratios to the baselines of the same run."""

from __future__ import annotations

from bench.__main__ import CHOSEN


def test_bench_table_prints_every_judged_figure_as_a_ratio_to_the_seed():
    from bench.report import table

    rows = {"seed": {"connects_per_s": 500.0}, CHOSEN: {"connects_per_s": 750.0}}
    figures = {
        "connected": 10,
        "synced_per_s": 1.0,
        "all_open_s": 1.0,
        "cpu_ms_per_connect": 1.0,
        "failed": 0,
    }
    printed = table(
        {"I": {k: {**figures, **v} for k, v in rows.items()}}, {"i_conns": 10, "i_tasks": 1, "i_inflight": 5}
    )
    header, seed, product = printed.strip().splitlines()[1:]
    assert "x seed" in header
    assert seed.split()[-3:] == ["1.00", "-", "-"]
    assert product.split()[-3:] == ["1.50", "-", "-"]

"""The SVG charts: axis scale, escaping, gaps, empty input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backend.dashboard.charts import Series, lines, nice_ceiling, stacked_bars

TIMES = [datetime(2026, 1, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=i) for i in range(4)]


def test_the_scale_ends_on_a_short_number():
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 3, 9, 11, 250, 801)] == [1, 0.4, 1, 4, 10, 20, 400, 1000]


def test_names_are_escaped_and_bars_stack():
    svg = stacked_bars(
        "t<x>",
        label='a "label" <b>',
        times=TIMES,
        series=[Series("<script>", "#000", [1, 0, 2, None]), Series("b", "#111", [1, 1, 0, 0])],
        unit="jobs",
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'data-chart="t&lt;x&gt;"' in svg
    assert svg.count('class="bar"') == 4  # zeros and None draw nothing
    assert "10:00 b: 1</title>" in svg and svg.startswith("<svg") and svg.endswith("</svg>")


def test_a_missing_bucket_breaks_the_line():
    svg = lines("l", label="l", times=TIMES, series=[Series("p50", "#000", [5, 6, None, 7])], unit="ms")
    assert svg.count('class="point"') == 3 and svg.count("<polyline") == 1  # 5-6, then 7 alone
    assert 'class="point"' not in lines(
        "e", label="e", times=TIMES, series=[Series("p", "#0", [None] * 4)], unit="ms"
    )

"""`make bench`'s per-precision report: a row for every precision the ladder tried, kept or refused,
and a chart that draws refused rows too (tools/bench.py, tools/bench_plot.py)."""

from __future__ import annotations

from PIL import Image

from tools.bench import StreamStats, precision_table
from tools.bench_plot import plot


def _row(precision: str, kept: bool, **figures) -> dict:
    base = {
        "precision": precision,
        "backend": "openvino",
        "detail": "fp32: stem, head",
        "kept": kept,
        "reason": "within limit" if kept else "max |dprob| 0.1225 > FAST_MAX_ABS_DIFF 0.02",
        "img_s": None,
        "max_abs_diff": None,
        "guard_max_abs_diff": None,
        "ladder_ms_per_image": None,
        "ladder_fp32_ms_per_image": None,
    }
    return base | figures


def test_every_precision_tried_has_a_row_with_its_speed_and_error_even_when_refused():
    rows = [
        _row("bf16", False, reason="failed to build: RuntimeError: MaxPool"),
        _row(
            "int8",
            False,
            img_s=51.3,
            max_abs_diff=0.1225,
            guard_max_abs_diff=0.1225,
            ladder_ms_per_image=12.0,
        ),
        _row("bf16", True, img_s=60.0, max_abs_diff=0.01, guard_max_abs_diff=0.011, ladder_ms_per_image=9.1),
    ]
    lines = precision_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    refused_int8 = lines[3]
    assert refused_int8.split()[:3] == ["int8", "openvino", "no"]
    assert "51.3" in refused_int8 and "0.1225" in refused_int8 and "FAST_MAX_ABS_DIFF" in refused_int8
    assert "failed to build" in lines[2] and lines[2].split()[3] == "-"  # never ran: no figures
    assert lines[4].split()[2] == "yes"


def test_the_chart_draws_refused_precisions_beside_the_three_configurations(tmp_path):
    def stats(img_s: float) -> StreamStats:
        return StreamStats(
            images=int(img_s * 10), seconds=10.0, preprocess_ms=[5.0, 6.0], inference_ms=[20.0]
        )

    rows = [
        ("reference", "torch/fp32 b1", stats(4)),
        ("default", "openvino/fp32 b8 t2", stats(30)),
        ("fast", "openvino/fp32 b8 t2 (=default)", stats(30)),
        ("fast:bf16", "openvino/bf16 b8 (refused)", stats(20)),
        ("fast:int8", "openvino/int8 b8 (refused)", stats(50)),
    ]
    result = {
        "machine": {"cpu": "test", "cores": 2},
        "default_speedup": 7.5,
        "fast_speedup": 7.5,
        "max_abs_diff_default": 1e-6,
        "max_abs_diff_fast": 1e-6,
    }
    plot(result, rows, tmp_path / "bench.png")
    assert Image.open(tmp_path / "bench.png").size == (1000, 460)

"""`python -m tools.dicom_decode_bench`: the figures it reports are consistent with each other."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.factories import ROOT, process_env


def test_the_dicom_decode_bench_reports_decoders_and_the_platform_path():
    run = subprocess.run(
        [sys.executable, "-m", "tools.dicom_decode_bench", "--repeat", "1", "--json-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=process_env(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["frames"]) == {"siim_sample", "pillow_reencoded"}
    for row in result["frames"].values():
        assert row["shape"] == [1024, 1024]
        assert row["bit_identical"] == (row["pixels_differ"] == 0)
        assert (row["max_abs_diff"] == 0) == row["bit_identical"]
        assert row["pylibjpeg_ms"] > 0 and row["turbo_ms"] > 0
    platform = result["platform"]
    assert set(platform) == {
        "intake_per_upload_ms",
        "worker_decode_stored_ms",
        "worker_preprocess_stored_ms",
        "decode_upload_ms",
        "preprocess_upload_ms",
    }
    assert all(value > 0 for value in platform.values())

"""`make tune`: the tuner writes a file that a worker's engine configuration then reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import ROOT, engine_config_of
from worker.runtime import cpu


@pytest.mark.slow
def test_the_tuner_writes_a_file_workers_read(tmp_path):
    out = tmp_path / "tuned.json"
    out.write_text(json.dumps({"format": 2, "hosts": {"Other CPU | 2 cores | avx2": {"config": {}}}}))
    run = subprocess.run(
        [sys.executable, "-m", "tools.tune", "--quick", "--seconds", "0.3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "CXRQ_VAR_DIR": str(ROOT / "var")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "best within p95" in run.stdout
    # Written under this CPU's signature, beside any other CPU's entry already in the file.
    written = json.loads(out.read_text())
    assert written["format"] == 2 and set(written["hosts"]) == {
        "Other CPU | 2 cores | avx2",
        cpu.current().key,
    }
    tuned = written["hosts"][cpu.current().key]
    assert tuned["cpu"]["flags"] == list(cpu.current().flags)
    assert tuned["config"]["batch_max_size"] in (1, 4) and tuned["config"]["batch_max_wait_ms"] in (0, 20)
    read = engine_config_of({"CXRQ_TUNED_CONFIG": str(out), "CXRQ_VAR_DIR": str(tmp_path / "var")})
    assert read["batch_max_size"] == tuned["config"]["batch_max_size"]


def test_the_tuner_and_a_workers_first_start_tune_choose_alike():
    """`make tune` and the bounded first-start tune share the measuring and the choice
    (worker/runtime/measure.py): best throughput within the p95 budget, lowest p95 within 3%."""
    from tools import tune
    from worker.runtime import measure

    assert tune.choose is measure.choose and tune.measure is measure.measure
    rows = [
        {"threads": 2, "batch_max_size": 16, "img_s": 50.0, "p95_batch_ms": 1500.0},  # over budget
        {"threads": 2, "batch_max_size": 8, "img_s": 40.0, "p95_batch_ms": 400.0},
        {
            "threads": 2,
            "batch_max_size": 2,
            "img_s": 39.5,
            "p95_batch_ms": 90.0,
        },  # within 3%: faster to answer
        {"threads": 1, "batch_max_size": 2, "img_s": 30.0, "p95_batch_ms": 80.0},
    ]
    assert measure.choose(rows, 1000.0)["batch_max_size"] == 2
    assert measure.choose(rows, 2000.0)["batch_max_size"] == 16

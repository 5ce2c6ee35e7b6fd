"""`make capacity` (tools/capacity.py) in its quick form: the shipped claim and intake, measured in
separate processes against a database of the tool's own, which is gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg2
import pytest

from tests.factories import ROOT
from tools.capacity import server_url

pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="the capacity benchmark measures PostgreSQL (SKIP LOCKED); this run is on SQLite",
)


@pytest.mark.slow
def test_quick_capacity_run_reports_every_figure_without_double_claims():
    database = f"cxrq_capacity_test_{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [sys.executable, "-m", "tools.capacity", "--quick", "--duration", "1", "--database", database],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),  # the test run's PostgreSQL server and Redis db (tests/pytest_services.py)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["jobs"] == [5_000] and result["clients"] == 50
    claims = [s for s in result["steps"] if s["step"] in ("claim", "cycle")]
    assert {(s["step"], s["procs"]) for s in claims} == {(m, p) for m in ("claim", "cycle") for p in (1, 4)}
    for step in claims:
        assert step["batch"] == result["shipped_batch"]
        assert step["queued_at_start"] == 5_000
        assert step["jobs"] > 0 and step["jobs_s"] > 0 and step["claims_s"] > 0
        assert 0 < step["claim_ms_p50"] <= step["claim_ms_p95"]
        assert step["double_claims"] == 0 and step["consistent"], step
        assert step["db_cores"] > 0 and step["db_ms_per_job"] > 0 and step["verdict"]
        waits = step["backend_waits"]
        assert abs(sum(waits.values()) - 1) < 0.01, waits
    for step in (s for s in claims if s["step"] == "cycle"):
        assert step["stored_s"] == step["jobs_s"]  # every claimed job's result stored, none dropped
        assert step["store_ms_p50"] > 0 and step["depth_ms_p50"] > 0
    uploads = [s for s in result["steps"] if s["step"] == "upload"]
    assert [s["procs"] for s in uploads] == [1, 2]
    for step in uploads:
        assert step["inserts_s"] > 0 and step["consistent"] and step["deduplicated"] == 0, step

    assert result["double_claims"] == 0 and result["consistent"]
    (summary,) = result["models"]
    assert summary["queued"] == 5_000 and summary["worker_cores_fed_per_db_core"] > 0
    assert summary["results_s_per_db_core"] > summary["engine_img_s_per_core"]

    storage = result["storage"]
    assert storage["job_row_bytes"] > 200 and storage["result_row_bytes"] > 200
    assert storage["stored_image_bytes"] > 10_000  # the real-size sample X-ray, stored

    assert result["database"] == database and result["database_dropped"]
    conn = psycopg2.connect(f"{server_url()}/postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [database])
        assert cur.fetchone()[0] == 0
    conn.close()

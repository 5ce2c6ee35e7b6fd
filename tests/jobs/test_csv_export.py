"""The one CSV (backend/jobs/csv_export.py) and GET /api/v1/jobs/{id}/result.csv: the columns, the
probability and the operating point on the same (raw) scale, the untrained marker, the errors."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from rest_framework.test import APIClient

from backend.jobs import csv_export
from backend.jobs.model_identity import LABELS
from backend.jobs.models import Job
from backend.web import thresholds
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db

HEADER = "job_id,reference,finding,probability,operating_point,scale,positive,model_version,weights"


def _succeeded(api, worker, seed: int, reference: str | None = None) -> dict:
    fields = {"reference": reference} if reference else None
    body = post_image(api, png_bytes(seed=seed), fields=fields).json()
    worker.drain()
    return body


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_api_csv_has_the_columns_one_row_per_finding_and_the_same_scale(api, worker):
    body = _succeeded(api, worker, seed=1, reference="ACC-CSV-1")
    response = api.get(f"/api/v1/jobs/{body['id']}/result.csv")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="cxrq-{body["id"]}.csv"' in response["Content-Disposition"]
    text = response.content.decode()
    assert text.split("\r\n")[0] == HEADER
    job = Job.objects.select_related("result").get(id=body["id"])
    assert text == csv_export.as_csv([job])  # the web client's download is this same function
    rows = _rows(text)
    assert [r["finding"] for r in rows] == [k for k in LABELS if k in job.result.probabilities]
    assert {r["job_id"] for r in rows} == {body["id"]}
    assert {r["reference"] for r in rows} == {"ACC-CSV-1"}
    assert {r["weights"] for r in rows} == {"untrained"}
    assert {r["model_version"] for r in rows} == {job.model_version}
    points = thresholds.operating_points()
    for row in rows:
        threshold = points.get(row["finding"])
        if threshold is None:  # no operating point: no raw value either
            assert row["probability"] == row["operating_point"] == row["positive"] == ""
            continue
        assert row["scale"] == "raw"
        assert float(row["operating_point"]) == pytest.approx(threshold, abs=1e-8)
        probability = float(row["probability"])
        assert 0.0 <= probability <= 1.0
        # Same scale: positive is exactly probability >= operating point (and stored >= 0.5).
        stored = job.result.probabilities[row["finding"]]
        assert row["positive"] == ("true" if stored >= 0.5 else "false")
        assert (probability >= threshold) == (stored >= 0.5)


def test_the_raw_probability_inverts_op_norm_exactly():
    torch_backends = pytest.importorskip("worker.runtime.backends")
    logits = np.linspace(-6, 6, 37, dtype=np.float32)[:, None].repeat(3, axis=1)
    thresholds_ = np.array([0.07422872, 0.5, 0.9], dtype=np.float32)
    stored = torch_backends.probabilities(logits, thresholds_)
    raw = 1 / (1 + np.exp(-logits.astype(np.float64)))
    for i in range(logits.shape[0]):
        for j, t in enumerate(thresholds_):
            assert csv_export.raw_probability(float(stored[i, j]), float(t)) == pytest.approx(
                raw[i, j], abs=2e-6
            )


def test_without_thresholds_the_stored_scale_is_written_and_said(api, worker, monkeypatch):
    body = _succeeded(api, worker, seed=2)
    monkeypatch.setattr(csv_export, "_operating_points", dict)
    rows = _rows(api.get(f"/api/v1/jobs/{body['id']}/result.csv").content.decode())
    assert {r["scale"] for r in rows} == {"calibrated"}
    assert {r["operating_point"] for r in rows} == {"0.50000000"}
    assert all(r["positive"] == ("true" if float(r["probability"]) >= 0.5 else "false") for r in rows)
    assert {r["reference"] for r in rows} == {""}


def test_no_result_another_client_and_a_deleted_job(api, worker):
    queued = post_image(api, png_bytes(seed=3)).json()
    assert_error(api.get(f"/api/v1/jobs/{queued['id']}/result.csv"), 409, "job_not_succeeded")
    assert_error(api.get("/api/v1/jobs/not-a-uuid/result.csv"), 404, "job_not_found")
    worker.drain()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key('csv-other')[1]}")
    assert_error(other.get(f"/api/v1/jobs/{queued['id']}/result.csv"), 404, "job_not_found")
    assert api.get(f"/api/v1/jobs/{queued['id']}/result.csv", HTTP_ACCEPT="text/csv").status_code == 200
    api.delete(f"/api/v1/jobs/{queued['id']}")
    assert_error(
        api.get(f"/api/v1/jobs/{queued['id']}/result.csv", HTTP_ACCEPT="text/csv"), 410, "job_deleted"
    )


def test_several_jobs_share_one_header():
    assert csv_export.as_csv([]) == HEADER + "\r\n"
    assert tuple(HEADER.split(",")) == csv_export.COLUMNS


def test_a_reference_a_spreadsheet_would_read_as_a_formula_is_written_as_text(api, worker):
    body = _succeeded(api, worker, seed=2, reference="-2-3")
    rows = _rows(api.get(f"/api/v1/jobs/{body['id']}/result.csv").content.decode())
    assert {r["reference"] for r in rows} == {"'-2-3"}
    # The job itself keeps the reference as given.
    assert api.get(f"/api/v1/jobs/{body['id']}").json()["reference"] == "-2-3"

"""A job's SR and FHIR report built once, kept sealed, served again from the store, gone with the
job, its image or its return path; one client's report requests bounded per process; ETags."""

from __future__ import annotations

import io
import logging
import threading
import warnings

import pydicom
import pytest
from django.db import connection
from rest_framework.test import APIClient

from backend.core.phi import PhiUnreadable, new_key
from backend.dicomnet.models import ReturnPath
from backend.dicomnet.returnpath import ReturnPathInfo, return_path_delivered
from backend.interop import fhir, limits, sr, store
from backend.interop.models import ReportKind, StoredReport
from backend.jobs.services import deletion
from tests.factories import assert_error, authorization, client_and_key, default_client
from tests.interop.factories import PATIENT, http_dicom_job, png_job, received_job, succeed

pytestmark = pytest.mark.django_db

SR_ACCEPT = {"HTTP_ACCEPT": "application/dicom"}


@pytest.fixture
def builds(monkeypatch) -> dict[str, int]:
    """How many times each report was built (the builders wrapped, still run)."""
    counts = {"sr": 0, "fhir": 0}
    build_sr, build_fhir = sr.build_sr, fhir.build_diagnostic_report

    def counting_sr(**kwargs):
        counts["sr"] += 1
        return build_sr(**kwargs)

    def counting_fhir(**kwargs):
        counts["fhir"] += 1
        return build_fhir(**kwargs)

    monkeypatch.setattr(sr, "build_sr", counting_sr)
    monkeypatch.setattr(fhir, "build_diagnostic_report", counting_fhir)
    return counts


def api_for(key: str) -> APIClient:
    api = APIClient()
    api.credentials(**{"HTTP_" + k.upper(): v for k, v in authorization(key).items()})
    return api


def test_a_report_is_built_once_and_the_next_requests_get_the_same_bytes(api, builds):
    job, _ = received_job(default_client())
    (job,) = succeed(job)
    first = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    second = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first["ETag"] == second["ETag"]
    assert builds["sr"] == 1

    report = [api.get(f"/api/v1/jobs/{job.id}/fhir") for _ in range(2)]
    assert [r.status_code for r in report] == [200, 200]
    assert report[0].content == report[1].content
    assert builds == {"sr": 1, "fhir": 1}
    ds = pydicom.dcmread(io.BytesIO(second.content))
    assert ds.PatientID == PATIENT["patient_id"]


def test_the_stored_copy_is_sealed_and_bound_to_its_job(api):
    job, _ = received_job(default_client())
    (job,) = succeed(job)
    body = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT).content
    assert PATIENT["patient_name"].encode() in body  # the answer carries it...
    assert api.get(f"/api/v1/jobs/{job.id}/fhir").status_code == 200
    rows = list(StoredReport.objects.filter(result_id=job.id))
    assert {row.kind for row in rows} == {ReportKind.SR, ReportKind.FHIR}
    for row in rows:
        sealed = bytes(row.sealed)
        for value in (*PATIENT.values(), "ROE", "RICHARD"):  # ...the stored copy does not
            assert value.encode() not in sealed
        assert store.open_bytes(sealed, job_id=job.id, kind=row.kind)
    (sr_row,) = [row for row in rows if row.kind == ReportKind.SR]
    assert store.open_bytes(sr_row.sealed, job_id=job.id, kind="sr") == body
    other, _ = received_job(default_client(), ae_title="MODALITY2", seed=2)
    with pytest.raises(PhiUnreadable):  # copied onto another job's row, it does not open
        store.open_bytes(sr_row.sealed, job_id=other.id, kind="sr")
    with pytest.raises(PhiUnreadable):
        store.open_bytes(sr_row.sealed, job_id=job.id, kind="fhir")


def test_a_copy_no_configured_key_opens_is_built_again_not_a_500(api, builds, settings, caplog):
    (job,) = succeed(png_job(default_client(), seed=9))
    first = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    settings.PHI_KEYS = [new_key()]  # the key that sealed it was removed
    second = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert builds["sr"] == 2
    assert "event=stored_report_unreadable" in caplog.text
    (row,) = StoredReport.objects.filter(result_id=job.id)
    assert store.open_bytes(row.sealed, job_id=job.id, kind="sr") == second.content


def test_reports_go_with_the_job(api):
    job, _ = received_job(default_client())
    (job,) = succeed(job)
    for path in ("sr.dcm", "fhir"):
        assert api.get(f"/api/v1/jobs/{job.id}/{path}").status_code == 200
    assert StoredReport.objects.filter(result_id=job.id).count() == 2
    deletion.job_delete(client=default_client(), job_id=job.id)
    assert not StoredReport.objects.exists()
    assert_error(api.get(f"/api/v1/jobs/{job.id}/sr.dcm"), 410, "job_deleted")


def test_reports_go_with_the_image_and_are_built_again_without_it(api, builds):
    (job,) = succeed(http_dicom_job(default_client()))
    before = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    assert StoredReport.objects.filter(result_id=job.id).exists()
    deletion.images_delete([job.id])
    assert not StoredReport.objects.filter(result_id=job.id).exists()
    after = api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT)
    assert builds["sr"] == 2
    assert after["ETag"] != before["ETag"]
    assert "CurrentRequestedProcedureEvidenceSequence" not in pydicom.dcmread(io.BytesIO(after.content))


def test_reports_with_phi_go_when_the_return_path_is_forgotten_after_delivery(api):
    client = default_client()
    job, _ = received_job(client)
    (job,) = succeed(job)
    ReturnPath.objects.filter(job_id=job.id).update(delete_after_delivery=True)
    assert api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT).status_code == 200
    return_path_delivered(job=job)
    assert not StoredReport.objects.filter(result_id=job.id).exists()
    # Asked again, it is built without the sender's study: no patient identity left.
    ds = pydicom.dcmread(io.BytesIO(api.get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT).content))
    assert ds.PatientID == "" and PATIENT["patient_id"] not in str(ds)


def test_another_clients_job_is_not_found_even_once_its_report_is_stored(api):
    other_client, other_key = client_and_key("hospital-b")
    (theirs,) = succeed(png_job(other_client, seed=5))
    for path in ("sr.dcm", "fhir"):
        assert api_for(other_key).get(f"/api/v1/jobs/{theirs.id}/{path}").status_code == 200
        assert_error(api.get(f"/api/v1/jobs/{theirs.id}/{path}"), 404, "job_not_found")
        response = api.get(f"/api/v1/jobs/{theirs.id}/{path}", HTTP_IF_NONE_MATCH="*")
        assert_error(response, 404, "job_not_found")


def test_a_client_past_its_report_requests_in_progress_gets_429_while_another_is_served(api, settings):
    settings.REPORT_CLIENT_CONCURRENCY = 1
    mine = default_client()
    (job,) = succeed(png_job(mine, seed=1))
    other_client, other_key = client_and_key("hospital-b")
    (theirs,) = succeed(png_job(other_client, seed=2), seed=1)
    with limits.client_slot(mine.pk):  # one of this client's report requests is in progress
        for path in ("sr.dcm", "fhir"):
            response = api.get(f"/api/v1/jobs/{job.id}/{path}")
            error = assert_error(response, 429, "too_many_report_requests")
            assert error["details"] == {"max_in_progress": 1}
            assert response["Retry-After"] == str(limits.RETRY_AFTER_SECONDS)
            assert api_for(other_key).get(f"/api/v1/jobs/{theirs.id}/{path}").status_code == 200
        # Its other requests are not held back.
        assert api.get(f"/api/v1/jobs/{job.id}").status_code == 200
    assert limits.in_progress(mine.pk) == 0
    assert api.get(f"/api/v1/jobs/{job.id}/sr.dcm").status_code == 200
    assert limits.in_progress(mine.pk) == 0  # released after an answer...
    assert api.get("/api/v1/jobs/not-a-uuid/sr.dcm").status_code == 404
    assert limits.in_progress(mine.pk) == 0  # ...and after an error


def test_etag_and_if_none_match_as_rfc_9110_says(api):
    (job,) = succeed(png_job(default_client(), seed=3))
    for path in ("sr.dcm", "fhir"):
        url = f"/api/v1/jobs/{job.id}/{path}"
        etag = api.get(url)["ETag"]
        assert etag.startswith('"') and etag.endswith('"')
        for header in (etag, f"W/{etag}", "*", f'"other", {etag}'):
            response = api.get(url, HTTP_IF_NONE_MATCH=header)
            assert response.status_code == 304, header
            assert response["ETag"] == etag and not response.content
        for header in ('"other"', f'W/{etag[:-2]}x"', "not a tag"):
            assert api.get(url, HTTP_IF_NONE_MATCH=header).status_code == 200, header
    queued = png_job(default_client(), seed=4)
    response = api.get(f"/api/v1/jobs/{queued.id}/sr.dcm", HTTP_IF_NONE_MATCH="*")
    assert_error(response, 409, "job_not_succeeded")


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_requests_for_one_job_build_it_once(api_key, settings, builds, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite keeps one row by the unique constraint)")
    settings.REPORT_CLIENT_CONCURRENCY = 0
    job, _ = received_job(default_client())
    (job,) = succeed(job)
    n = 4
    counting_sr = sr.build_sr
    others_waiting = threading.Event()

    def build_once_the_others_wait(**kwargs):
        # The first builder holds the lock until every other request waits on it: where they did
        # not wait (no lock), they would build too and the count below would say so.
        if not others_waiting.is_set():
            for _ in range(200):
                if _waiting_on_locks() >= n - 1:
                    others_waiting.set()
                    break
                threading.Event().wait(0.05)
        return counting_sr(**kwargs)

    monkeypatch.setattr(sr, "build_sr", build_once_the_others_wait)
    start = threading.Barrier(n)
    answers: list = []

    def request() -> None:
        try:
            start.wait(10)
            answers.append(api_for(api_key).get(f"/api/v1/jobs/{job.id}/sr.dcm", **SR_ACCEPT))
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in answers] == [200] * n
    assert len({r.content for r in answers}) == 1
    assert others_waiting.is_set()
    assert builds["sr"] == 1
    assert StoredReport.objects.filter(result_id=job.id).count() == 1


def test_building_for_a_name_without_carets_warns_and_logs_nothing_with_it(caplog):
    (job,) = succeed(png_job(default_client(), seed=8))
    name = "SMITHPROBEJOHN"
    info = ReturnPathInfo(
        patient_id="PID-PROBE-1",
        patient_name=name,
        study_instance_uid="1.2.826.0.1.3680043.8.498.2001",
        accession_number="ACC-PROBE-1",
        series_instance_uid="1.2.826.0.1.3680043.8.498.2002",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2003",
        sop_class_uid=pydicom.uid.DigitalXRayImageStorageForPresentation,
        calling_ae_title="PACS1",
    )
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = sr.to_bytes(sr.build_sr(job=job, return_path=info))
        capture = sr.to_bytes(sr.build_secondary_capture(job=job, return_path=info))
    assert not [str(w.message) for w in caught if name in str(w.message)]
    assert name not in caplog.text
    # The sender's value is what the objects carry, not the form given to highdicom's check.
    for data in (report, capture):
        assert str(pydicom.dcmread(io.BytesIO(data)).PatientName) == name

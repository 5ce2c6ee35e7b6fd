"""Deliveries to PACS through the service, against real peers: dcmtk's storescp stores what it is
sent, a pynetdicom SCP answers failure statuses or rejects the association, a closed port refuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.dicomnet.models import ReturnPath
from backend.jobs.services import deletion
from backend.pacs import services
from backend.pacs.models import PacsAttempt, PacsDelivery, PacsDeliveryStatus
from tests.factories import client_and_key
from tests.interop.factories import PATIENT, png_job, succeed
from tests.pacs.factories import api_for, received_job, sr_probabilities, succeeded_dicom_job

pytestmark = pytest.mark.django_db

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _due_now(delivery: PacsDelivery) -> None:
    """Time passes: the retry is due."""
    PacsDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())


def test_a_succeeded_dicom_job_gets_one_delivery_per_enabled_destination(hospital, destination):
    pacs = destination(104, name="pacs")
    destination(105, name="archive", enabled=False)
    other = client_and_key("another-hospital")[0]
    services.destination_add(client=other, name="theirs", ae_title="THEIRS", host="127.0.0.1", port=106)

    job, _ = succeeded_dicom_job(hospital)
    (delivery,) = PacsDelivery.objects.filter(job=job)
    assert delivery.destination == pacs and delivery.destination_name == "pacs"
    assert delivery.status == PacsDeliveryStatus.PENDING and delivery.next_attempt_at is not None

    services.schedule([job.id])  # again: still one (the database keeps the pair unique)
    assert PacsDelivery.objects.filter(job=job).count() == 1


def test_http_uploads_and_jobs_without_a_result_get_none(hospital, destination):
    destination(104)
    (uploaded,) = succeed(png_job(hospital))
    queued, _ = received_job(hospital, seed=3)
    assert services.schedule([uploaded.id, queued.id]) == []
    assert not PacsDelivery.objects.exists()


def test_the_sr_lands_in_the_pacs_in_the_senders_study_and_the_return_path_goes(
    hospital, destination, storescp
):
    destination(storescp.port)
    job, sent = succeeded_dicom_job(hospital, delete_after_delivery=True)
    delivery = PacsDelivery.objects.get(job=job)

    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.DELIVERED
    (sr,) = storescp.received()
    assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == sent.StudyInstanceUID
    assert sr.PatientID == PATIENT["patient_id"] and sr.AccessionNumber == PATIENT["accession"]
    assert sr.SeriesInstanceUID != sent.SeriesInstanceUID
    probabilities = sr_probabilities(sr)
    assert len(probabilities) == 18
    for label, p in job.result.probabilities.items():
        assert probabilities[label.replace("_", " ")] == pytest.approx(p, abs=1e-6)

    (attempt,) = PacsAttempt.objects.filter(delivery=delivery)
    assert (attempt.number, attempt.dimse_status, attempt.error, attempt.sent) == (1, 0, "", 1)
    delivery.refresh_from_db()
    assert delivery.finished_at and delivery.next_attempt_at is None and delivery.attempt_started_at is None
    assert not ReturnPath.objects.filter(job=job).exists()  # the sender asked for it to go once delivered
    assert services.attempt(str(delivery.id)) is None  # a duplicate wake-up sends nothing


def test_the_secondary_capture_goes_too_where_the_destination_asks(hospital, destination, storescp):
    destination(storescp.port, send_secondary_capture=True)
    job, sent = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.DELIVERED
    received = {ds.SOPClassUID: ds for ds in storescp.received()}
    assert set(received) == {COMPREHENSIVE_SR, SECONDARY_CAPTURE}
    assert {ds.StudyInstanceUID for ds in received.values()} == {sent.StudyInstanceUID}
    assert PacsAttempt.objects.get(delivery=delivery).sent == 2
    assert ReturnPath.objects.filter(job=job).exists()  # kept: this sender did not ask otherwise


def test_a_refusing_destination_is_retried_with_backoff_then_given_up(
    hospital, destination, closed_port, settings
):
    settings.PACS_RETRY_BASE_SECONDS = 10.0
    settings.PACS_TIMEOUT_SECONDS = 3.0
    destination(closed_port)
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)

    before = timezone.now()
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.PENDING
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.last_error.startswith("connect_error")
    assert (
        before + timedelta(seconds=8.9)
        <= delivery.next_attempt_at
        <= timezone.now() + timedelta(seconds=11.1)
    )
    assert services.attempt(str(delivery.id)) is None  # not due yet: nothing sent, nothing recorded

    _due_now(delivery)
    before = timezone.now()
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.PENDING
    delivery.refresh_from_db()
    assert delivery.next_attempt_at >= before + timedelta(seconds=17.9)  # twice the first wait

    settings.PACS_GIVE_UP_SECONDS = 5.0  # the next wait would end past the give-up window
    _due_now(delivery)
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.GAVE_UP
    attempts = list(PacsAttempt.objects.filter(delivery=delivery))
    assert [a.number for a in attempts] == [1, 2, 3]
    assert all(a.error.startswith("connect_error") and a.dimse_status is None for a in attempts)
    assert all(a.duration_ms < 3500 for a in attempts)

    shown = api_for(hospital).get(f"/api/v1/jobs/{job.id}").json()
    (logged,) = shown["pacs"]
    assert logged["destination"] == "pacs" and logged["status"] == "gave_up"
    assert [a["number"] for a in logged["attempts"]] == [1, 2, 3]
    assert logged["attempts"][0]["error"].startswith("connect_error") and logged["attempts"][0]["sent"] == 0


def test_a_failure_status_is_retried_and_a_rejected_association_recorded(hospital, destination, scripted_scp):
    busy = scripted_scp(statuses=[0xA700])
    destination(busy.port)
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.PENDING
    first = PacsAttempt.objects.get(delivery=delivery)
    assert (first.dimse_status, first.error, first.sent) == (0xA700, "dimse_0xA700", 0)
    _due_now(delivery)
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.DELIVERED
    assert [ds.SOPClassUID for ds in busy.stored] == [COMPREHENSIVE_SR]

    picky = scripted_scp(calling=["SOMEONE"])
    services.destination_add(
        client=hospital, name="picky", ae_title="PACS", host="127.0.0.1", port=picky.port
    )
    services.schedule([job.id])
    rejected = PacsDelivery.objects.get(job=job, destination_name="picky")
    assert services.attempt(str(rejected.id)) == PacsDeliveryStatus.PENDING
    assert PacsAttempt.objects.get(delivery=rejected).error.startswith(
        "association_rejected: Rejected Permanent"
    )
    assert picky.stored == []


def test_the_calling_ae_title_is_the_destinations_or_ours(hospital, destination, scripted_scp, settings):
    scp = scripted_scp(calling=["HOSPITAL-AI"])
    destination(scp.port, calling_ae_title="HOSPITAL-AI")
    job, _ = succeeded_dicom_job(hospital)
    assert services.attempt(str(PacsDelivery.objects.get(job=job).id)) == PacsDeliveryStatus.DELIVERED

    settings.DICOM_AE_TITLE = "CXRQ-TEST"
    ours = scripted_scp(calling=["CXRQ-TEST"])
    destination(ours.port, name="plain")
    services.schedule([job.id])
    plain = PacsDelivery.objects.get(job=job, destination_name="plain")
    assert services.attempt(str(plain.id)) == PacsDeliveryStatus.DELIVERED


def test_a_removed_destination_or_a_deleted_job_ends_the_delivery_failed(hospital, destination, closed_port):
    destination(closed_port, name="old")
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)
    assert services.destination_remove(client=hospital, name="old")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.destination, delivery.last_error) == (
        PacsDeliveryStatus.FAILED,
        None,
        "destination_removed",
    )

    destination(closed_port, name="new")
    second, _ = succeeded_dicom_job(hospital, seed=5)
    delivery = PacsDelivery.objects.get(job=second)
    deletion.job_delete(client=hospital, job_id=second.id)
    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.FAILED
    assert PacsAttempt.objects.get(delivery=delivery).error == "no_result: the job is deleted"


def test_the_sweep_wakes_deliveries_whose_message_was_lost(hospital, destination, closed_port, monkeypatch):
    destination(closed_port)
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)
    woken: list[str] = []
    monkeypatch.setattr(services, "send_wakeups", lambda ids, countdown=0.0: woken.extend(map(str, ids)) or 0)
    assert services.sweep() == 0 and woken == []  # due only just now: not overdue
    PacsDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    services.sweep()
    assert woken == [str(delivery.id)]


def test_the_job_shows_no_pacs_deliveries_when_it_has_none(api):
    (job,) = succeed(png_job(client_and_key()[0]))
    assert api.get(f"/api/v1/jobs/{job.id}").json()["pacs"] == []


def test_metrics_count_the_recent_attempts_by_outcome(
    hospital, destination, closed_port, scripted_scp, client
):
    destination(closed_port)
    busy = scripted_scp(statuses=[0xA700])
    destination(busy.port, name="busy")
    job, _ = succeeded_dicom_job(hospital)
    for delivery in PacsDelivery.objects.filter(job=job):
        services.attempt(str(delivery.id))
    text = client.get("/metrics").content.decode()
    assert 'cxrq_pacs_recent_attempts{outcome="connect_error"} 1.0' in text
    assert 'cxrq_pacs_recent_attempts{outcome="dimse_failure"} 1.0' in text
    assert 'cxrq_pacs_recent_attempts{outcome="stored"} 0.0' in text

"""The return path's PHI: sealed at rest, opened only by return_path_for, gone at retention or delivery."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

import pydicom
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from backend.core import phi
from backend.dicomnet import services
from backend.dicomnet.models import ReturnPath
from backend.dicomnet.returnpath import ReturnPathInfo, return_path_delivered, return_path_for
from backend.jobs.models import Job, JobStatus
from backend.jobs.services.deletion import job_delete, purge_expired
from tests.dicomnet.factories import cr_chest
from tests.factories import client_and_key, post_image, sample_bytes

SECRETS = {
    "patient_id": "PID-SECRET-4711",
    "patient_name": "SECRET^PATIENT^Q",
    "accession": "ACC-SECRET-0099",
}


def _receive(sender, **overrides):
    data = cr_chest(seed=overrides.pop("seed", 11), **{**SECRETS, **overrides})
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    received = services.instance_receive(
        sender=sender,
        part10=data,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        peer_address="127.0.0.1",
    )
    return received, ds


@pytest.fixture
def sender_after_delivery(hospital):
    return services.sender_add(ae_title="PACS1", client=hospital, delete_after_delivery=True)


@pytest.mark.django_db(transaction=True)
def test_the_phi_is_not_in_plaintext_in_a_database_dump_and_decrypts_back(sender):
    received, ds = _receive(sender)
    plain = [*SECRETS.values(), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        if not shutil.which("pg_dump"):
            pytest.skip("pg_dump is not installed: apt-get install postgresql-client")
        dump = subprocess.run(
            ["pg_dump", "--data-only", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert "dicomnet_returnpath" in dump
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM dicomnet_returnpath")
            dump = repr(cursor.fetchall())
    for value in plain:
        assert value not in dump
        assert value.encode().hex() not in dump  # nor as bytea's hex
    info = return_path_for(received.job)
    assert info == ReturnPathInfo(
        patient_id=SECRETS["patient_id"],
        patient_name=SECRETS["patient_name"],
        study_instance_uid=str(ds.StudyInstanceUID),
        accession_number=SECRETS["accession"],
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        calling_ae_title="MODALITY",
    )
    assert SECRETS["patient_id"] not in repr(info)  # a stray log line of it shows no PHI


def test_the_phi_is_not_in_the_api_answer(sender, hospital):
    received, _ = _receive(sender)
    key = client_and_key("hospital-dicom")[1]
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    answer = api.get(f"/api/v1/jobs/{received.job.id}")
    body = answer.content.decode()
    assert str(received.job.id) in body
    # The Accession Number is the job's default reference, shown to its own client as that alone
    # (tests/dicomnet/test_reference.py); the patient's identity never.
    assert answer.json()["reference"] == SECRETS["accession"]
    assert body.count(SECRETS["accession"]) == 1
    for value in (SECRETS["patient_id"], SECRETS["patient_name"]):
        assert value not in body


def test_an_http_upload_has_no_return_path(api):
    response = post_image(api, sample_bytes("00000001_000.png"))
    assert response.status_code in (200, 201, 202), response.content
    job = Job.objects.get(id=response.json()["id"])
    assert return_path_for(job) is None
    assert not ReturnPath.objects.exists()


def test_a_dataset_that_does_not_match_its_request_leaves_no_job(sender):
    data = cr_chest(seed=12)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    with pytest.raises(services.DatasetMismatch):
        services.instance_receive(
            sender=sender, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid="1.2.3.4"
        )
    assert not Job.objects.exists() and not ReturnPath.objects.exists()


def test_the_retention_purge_removes_it_with_the_image(sender, hospital):
    received, _ = _receive(sender)
    Job.objects.filter(id=received.job.id).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now() - timedelta(days=hospital.image_retention + 1)
    )
    assert return_path_for(received.job) is not None
    outcome = purge_expired()
    assert outcome.images_deleted == 1
    assert return_path_for(received.job) is None
    assert not ReturnPath.objects.exists()


def test_deleting_the_job_removes_it(sender, hospital):
    received, _ = _receive(sender)
    Job.objects.filter(id=received.job.id).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    job_delete(client=hospital, job_id=received.job.id)
    assert return_path_for(received.job) is None


def test_delivered_removes_it_only_where_the_sender_asked(sender, sender_after_delivery):
    kept, _ = _receive(sender, seed=21)
    dropped, _ = _receive(sender_after_delivery, seed=22)
    return_path_delivered(job=kept.job)
    return_path_delivered(job=dropped.job)
    assert return_path_for(kept.job) is not None
    assert return_path_for(dropped.job) is None
    return_path_delivered(job=dropped.job)  # twice: nothing left to do, no error


def test_the_same_instance_sent_again_is_the_same_job_with_one_return_path(sender):
    data = cr_chest(seed=31, **SECRETS)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    sent = [
        services.instance_receive(
            sender=sender,
            part10=data,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
        )
        for _ in range(2)
    ]
    assert sent[0].job.id == sent[1].job.id
    assert (sent[0].deduplicated, sent[1].deduplicated) == (False, True)
    assert ReturnPath.objects.count() == 1


def test_an_image_uploaded_over_http_then_sent_over_dicom_gets_its_return_path(api, hospital):
    from backend.clients.models import Client

    data = cr_chest(seed=32, **SECRETS)
    job_id = post_image(api, data, name="x.dcm").json()["id"]
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    test_client = Job.objects.get(id=job_id).client
    assert isinstance(test_client, Client)
    pacs = services.sender_add(ae_title="SAMECLIENT", client=test_client)
    received = services.instance_receive(
        sender=pacs, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID)
    )
    assert received.deduplicated and str(received.job.id) == job_id
    assert return_path_for(received.job).accession_number == SECRETS["accession"]


def test_a_ciphertext_moved_to_another_job_does_not_open(sender):
    one, _ = _receive(sender, seed=41)
    two, _ = _receive(sender, seed=42)
    sealed = ReturnPath.objects.get(job=one.job).sealed
    ReturnPath.objects.filter(job=two.job).update(sealed=sealed)
    with pytest.raises(phi.PhiUnreadable):
        return_path_for(two.job)


def test_keys_rotate_the_new_one_seals_the_old_one_still_opens(settings, sender):
    old, new = phi.new_key(), phi.new_key()
    settings.PHI_KEYS = [old]
    before, _ = _receive(sender, seed=51)
    settings.PHI_KEYS = [new, old]
    after, _ = _receive(sender, seed=52)
    assert return_path_for(before.job).patient_id == SECRETS["patient_id"]
    assert return_path_for(after.job).patient_id == SECRETS["patient_id"]
    assert ReturnPath.objects.get(job=before.job).key_id != ReturnPath.objects.get(job=after.job).key_id
    settings.PHI_KEYS = [new]
    with pytest.raises(phi.PhiUnreadable):
        return_path_for(before.job)
    assert return_path_for(after.job) is not None

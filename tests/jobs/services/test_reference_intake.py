"""intake.job_create and batches.batch_create with a reference, called as the services they are
(the web client and the DICOM receiver call them too, not only the API)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs import errors
from backend.jobs.models import Job
from backend.jobs.services import batches, intake
from tests.dicomnet.factories import cr_chest
from tests.factories import client_and_key, png_bytes

pytestmark = pytest.mark.django_db


def _upload(data: bytes, name: str = "x.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def test_job_create_keeps_a_checked_reference_and_refuses_a_bad_one_before_anything():
    client, _ = client_and_key()
    job = intake.job_create(client=client, upload=_upload(png_bytes(seed=1)), reference="REF 1").job
    assert Job.objects.get(id=job.id).reference == "REF 1"
    with pytest.raises(errors.InvalidReference):
        intake.job_create(client=client, upload=_upload(png_bytes(seed=2)), reference="x" * 65)
    assert Job.objects.count() == 1


def test_an_idempotent_replay_answers_with_the_first_job_as_it_is():
    client, _ = client_and_key()
    first = intake.job_create(
        client=client, upload=_upload(png_bytes(seed=3)), idempotency_key="k-1", reference="FIRST"
    ).job
    again = intake.job_create(
        client=client, upload=_upload(png_bytes(seed=3)), idempotency_key="k-1", reference="OTHER"
    )
    assert again.job.id == first.id and again.deduplicated
    assert Job.objects.get(id=first.id).reference == "FIRST"


def test_a_dicom_upload_takes_its_accession_number_unless_given_one_or_told_not_to():
    client, _ = client_and_key()
    data = cr_chest(seed=4, accession="ACC-SVC-4")
    assert intake.job_create(client=client, upload=_upload(data, "a.dcm")).job.reference == "ACC-SVC-4"
    client.reference_from_dicom = "none"
    client.save(update_fields=["reference_from_dicom"])
    other = intake.job_create(client=client, upload=_upload(cr_chest(seed=5, accession="ACC-SVC-5"), "b.dcm"))
    assert other.job.reference is None


def test_batch_create_gives_each_image_its_reference_in_order():
    client, _ = client_and_key()
    uploads = [_upload(png_bytes(seed=10 + i)) for i in range(3)]
    batch = batches.batch_create(client=client, uploads=uploads, reference=["A", "", "C"])
    jobs = batches.batch_jobs(batch)
    assert [jobs[item["job_id"]].reference for item in batch.items] == ["A", None, "C"]
    with pytest.raises(errors.InvalidReference):
        batches.batch_create(client=client, uploads=[_upload(png_bytes(seed=20))], reference=["A", "B"])

"""No PHI at rest: a DICOM with planted markers goes through the API and the worker, and the
markers are nowhere afterwards: not in a stored file, a database row, a log line or a response."""

from __future__ import annotations

import hashlib
import io
import logging

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.models import Job, JobStatus
from tests.factories import post_image
from tests.jobs.images import factories as f
from tests.jobs.images import phi

pytestmark = pytest.mark.django_db


def _post(api, data: bytes):
    upload = SimpleUploadedFile(phi.FILENAME, data, content_type=phi.CONTENT_TYPE)
    return api.post("/api/v1/jobs", {"image": upload}, format="multipart")


def test_planted_phi_is_nowhere_after_upload_and_inference(api, worker, settings, caplog, capfd):
    settings.BATCH_MAX_WAIT_MS = 0
    caplog.set_level(logging.DEBUG)
    data = phi.phi_dicom()

    created = _post(api, data)
    assert created.status_code == 202, created.content
    job_id = created.json()["id"]
    assert worker.drain() == 1
    detail = api.get(f"/api/v1/jobs/{job_id}")
    listing = api.get("/api/v1/jobs")
    again = _post(api, data)  # a cache hit answers from the row, not the file

    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert len(detail.json()["result"]["probabilities"]) == 18
    assert job.sha256 == hashlib.sha256(data).hexdigest()  # the only trace of the original bytes
    assert again.json()["id"] == job_id

    for response in (created, detail, listing, again):
        assert phi.found_in(str(phi.without_reference(response.json()))) == []
    # The Accession Number is the job's reference (the client's default rule), and only there.
    assert detail.json()["reference"] == phi.MARKERS["accession"]
    for path, content in phi.stored_files(settings.MEDIA_ROOT).items():
        assert phi.found_in(content) == [], path
    database = phi.dump_database()
    assert job_id in database.replace("-", "") or job_id in database  # the dump does see our rows
    assert phi.found_in(database) == []
    out, err = capfd.readouterr()
    assert phi.found_in(caplog.text + out + err) == []

    # What is kept: the pixels, and checked acquisition facts (the planted series description is not one).
    acquisition = detail.json()["acquisition"]
    assert acquisition["modality"] == "CR"
    assert acquisition["pixel_spacing_mm"] == [0.168, 0.168]
    assert acquisition["view_position"] == "PA"
    stored = pydicom.dcmread(io.BytesIO(job.upload.read()))
    assert stored.PatientIdentityRemoved == "YES"
    assert (stored.pixel_array == f.read(data).pixel_array).all()


def test_burned_in_annotation_upload_is_refused_and_nothing_rests(api, media_files, caplog):
    caplog.set_level(logging.DEBUG)
    ds = f.read(phi.phi_dicom())
    ds.BurnedInAnnotation = "YES"
    response = _post(api, f.to_bytes(ds))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "dicom_burned_in_annotation"
    assert Job.objects.count() == 0 and media_files() == []
    assert phi.found_in(response.content) == []
    assert phi.found_in(caplog.text) == []
    assert phi.found_in(phi.dump_database()) == []


def test_png_text_chunks_do_not_rest_either(api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    base = f.png16_bytes()
    data = f.with_png_chunks(base, f.png_chunk(b"tEXt", b"Patient\x00" + phi.MARKERS["name"].encode()))
    response = post_image(api, data, phi.FILENAME.replace(".dcm", ".png"))
    assert response.status_code == 202, response.content
    worker.drain()
    assert phi.found_in(phi.dump_database()) == []
    for content in phi.stored_files(settings.MEDIA_ROOT).values():
        assert phi.found_in(content) == []

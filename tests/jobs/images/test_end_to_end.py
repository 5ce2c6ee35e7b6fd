"""Every sample and generated clinical format, and the planted-PHI DICOM, through the HTTP API
and a real Celery worker process."""

from __future__ import annotations

import pytest
import requests
from django.conf import settings

from tests.factories import DATA, authorization, poll_job, sample_bytes
from tests.jobs.images import factories as f
from tests.jobs.images import phi

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAMPLES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg", ".dcm"))


def test_every_sample_and_generated_format_succeeds_with_a_real_worker(live_server, start_worker, api_key):
    worker = start_worker()
    worker.wait_ready()
    api = f"{live_server.url}/api/v1"
    uploads = {name: sample_bytes(name) for name in SAMPLES}
    uploads.update({name: make() for name, make in f.ACCEPTED_GENERATED.items()})
    uploads[phi.FILENAME] = phi.phi_dicom()
    assert {f.MONO2_SAMPLE, f.MONO1_SAMPLE, "png16.png", "jpeg2000_12bit.dcm"} <= set(uploads)

    created = {}
    for name, data in uploads.items():
        r = requests.post(
            f"{api}/jobs",
            files={"image": (name, data, phi.CONTENT_TYPE if name == phi.FILENAME else None)},
            headers=authorization(api_key),
            timeout=30,
        )
        assert r.status_code == 202, (name, r.text)
        created[name] = r.json()

    finished = {name: poll_job(job["url"], headers=authorization(api_key)) for name, job in created.items()}
    for name, body in finished.items():
        assert body["status"] == "succeeded", (name, body)
        assert len(body["result"]["probabilities"]) == 18, name
        expected = "DICOM" if name.endswith(".dcm") else ("PNG" if name.endswith(".png") else "JPEG")
        assert body["image_format"] == expected, name
        assert body["result"]["timings"]["preprocess_ms"] > 0

    # The planted PHI went through the same path and is nowhere: responses, files, rows, worker log.
    # (The planted Accession Number is its job's reference by design: tests/jobs/images/phi.py.)
    answers = phi.without_reference([*finished.values(), *created.values()])
    assert phi.found_in(str(answers)) == []
    assert finished[phi.FILENAME]["reference"] == phi.MARKERS["accession"]
    listing = requests.get(f"{api}/jobs?page_size=100", headers=authorization(api_key), timeout=5)
    assert listing.status_code == 200 and phi.found_in(str(phi.without_reference(listing.json()))) == []
    for path, content in phi.stored_files(settings.MEDIA_ROOT).items():
        assert phi.found_in(content) == [], path
    assert phi.found_in(phi.dump_database()) == []
    log = worker.log
    assert "event=batch_done" in log
    assert phi.found_in(log) == []

"""The round trip with a real PACS: Debian's Orthanc pushes a study to cxrq's receiver, a real
worker (fake model) analyses it, the real dispatcher sends the SR back, and Orthanc's REST API
shows it in the same study. The timings of each leg are printed (pytest -s)."""

from __future__ import annotations

import io
import re
import time

import httpx
import pydicom
import pytest

from backend.dicomnet import services as dicomnet
from backend.jobs.models import Job, JobStatus
from backend.pacs.models import PacsDelivery, PacsDeliveryStatus
from tests.dicomnet.factories import SAMPLES
from tests.factories import client_and_key
from tests.pacs.factories import sr_probabilities

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}
DEADLINE_S = 90


def _until(what: str, check, deadline: float, logs) -> object:
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"{what} not seen in time\n" + "\n".join(log()[-2500:] for log in logs))


def test_a_study_pushed_from_orthanc_comes_back_as_an_sr_in_the_same_study(
    hospital, destination, dicom_receiver, start_orthanc, start_worker, start_dispatcher, start_web, capsys
):
    began = time.monotonic()
    deadline = began + DEADLINE_S
    # The processes start together; each is waited for after.
    worker = start_worker(FAKE_WORKER)
    dispatcher = start_dispatcher()
    web = start_web()
    dicom_receiver.wait_ready()
    orthanc = start_orthanc(cxrq_ae_title="CXRQ", cxrq_port=dicom_receiver.port)
    dicomnet.sender_add(ae_title=orthanc.AE_TITLE, client=hospital, priority="stat", allowed_host="127.0.0.1")
    destination(orthanc.dicom_port, name="orthanc", ae_title=orthanc.AE_TITLE)
    worker.wait_ready()
    dispatcher.wait_ready()
    web.wait_ready()
    logs = [lambda: dicom_receiver.log, lambda: worker.log, lambda: dispatcher.log, lambda: orthanc.log]
    started_s = time.monotonic() - began

    pacs = httpx.Client(base_url=orthanc.url, timeout=30, trust_env=False)
    uploaded = [pacs.post("/instances", content=path.read_bytes()).json() for path in SAMPLES]
    study_id = uploaded[0]["ParentStudy"]
    assert {u["ParentStudy"] for u in uploaded} == {study_id}
    source = pydicom.dcmread(SAMPLES[0], stop_before_pixels=True)
    series_before = {s["ID"] for s in pacs.get(f"/studies/{study_id}/series").json()}

    pushed_at = time.monotonic()
    pushed = pacs.post("/modalities/cxrq/store", content=study_id)
    assert pushed.status_code == 200, (pushed.text, orthanc.log[-3000:], dicom_receiver.log[-3000:])
    push_s = time.monotonic() - pushed_at

    job = _until("the job", lambda: Job.objects.filter(client=hospital).first(), deadline, logs)
    job_seen_s = time.monotonic() - pushed_at
    job = _until(
        "the result",
        lambda: Job.objects.filter(id=job.id, status=JobStatus.SUCCEEDED).select_related("result").first(),
        deadline,
        logs,
    )
    result_seen_s = time.monotonic() - pushed_at

    def sr_series():
        for series in pacs.get(f"/studies/{study_id}/series").json():
            if series["ID"] not in series_before and series["MainDicomTags"].get("Modality") == "SR":
                return series
        return None

    series = _until("the SR in Orthanc", sr_series, deadline, logs)
    sr_seen_s = time.monotonic() - pushed_at

    (instance_id,) = series["Instances"]
    sr = pydicom.dcmread(io.BytesIO(pacs.get(f"/instances/{instance_id}/file").content))
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.Modality == "SR"
    found = sr_probabilities(sr)
    assert len(found) == 18
    for label, p in job.result.probabilities.items():
        assert found[label.replace("_", " ")] == pytest.approx(p, abs=1e-6)
    tags = pacs.get(f"/instances/{instance_id}/simplified-tags").json()
    assert tags["PatientID"] == source.PatientID and tags["StudyInstanceUID"] == source.StudyInstanceUID

    delivery = PacsDelivery.objects.get(job=job)
    assert delivery.status == PacsDeliveryStatus.DELIVERED
    key = client_and_key(hospital.name)[1]
    shown = httpx.get(
        f"{web.url}/api/v1/jobs/{job.id}", headers={"Authorization": f"Api-Key {key}"}, trust_env=False
    ).json()
    (logged,) = shown["pacs"]
    assert logged["destination"] == "orthanc" and logged["status"] == "delivered"
    assert logged["attempts"][-1]["dimse_status"] == 0 and logged["attempts"][-1]["sent"] == 1

    built = re.search(
        r"event=pacs_attempt .*status=delivered duration_ms=\S+ build_ms=([\d.]+)", dispatcher.log
    )
    assert built, dispatcher.log[-2000:]
    job_created_s = (job.created_at.timestamp() - time.time()) + (time.monotonic() - pushed_at)
    total_s = time.monotonic() - began
    assert total_s < DEADLINE_S
    with capsys.disabled():
        print(
            f"\nround trip (Orthanc -> cxrq -> Orthanc): processes ready {started_s:.2f}s; after the push: "
            f"C-STORE to cxrq done {push_s:.2f}s, job created {job_created_s:.2f}s (seen {job_seen_s:.2f}s), "
            f"result {result_seen_s:.2f}s, SR in Orthanc {sr_seen_s:.2f}s; SR C-STORE attempt "
            f"{logged['attempts'][-1]['duration_ms']:.0f} ms (building the SR {float(built.group(1)):.0f} ms); "
            f"whole test {total_s:.1f}s"
        )

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
from backend.dicomnet.models import UnscoredInstance
from backend.jobs.models import Job, JobStatus
from backend.pacs.models import PacsDelivery, PacsDeliveryStatus
from tests.dicomnet.factories import SAMPLES, changed
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


def _machine() -> str:
    """The CPU and load beside a timing: the machine is shared, so a figure means little without them."""
    import os
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"nproc {os.cpu_count()}, {model}, loadavg {load}"


@pytest.mark.parametrize("order", ["pa_first", "lateral_first"])
def test_a_whole_study_pushed_in_either_order_scores_the_pa_and_takes_back_cxrqs_own_output(
    order, hospital, destination, dicom_receiver, start_orthanc, start_worker, start_dispatcher, capsys
):
    """A PA and a lateral pushed from Orthanc in a chosen order: the push succeeds, the PA is
    scored, the lateral recorded; the SR and SC come back into the study; the whole study pushed
    again (cxrq's own objects with it) succeeds with no new job."""
    deadline = time.monotonic() + DEADLINE_S
    worker = start_worker(FAKE_WORKER)
    dispatcher = start_dispatcher()
    dicom_receiver.wait_ready()
    orthanc = start_orthanc(cxrq_ae_title="CXRQ", cxrq_port=dicom_receiver.port)
    dicomnet.sender_add(ae_title=orthanc.AE_TITLE, client=hospital, priority="stat", allowed_host="127.0.0.1")
    destination(orthanc.dicom_port, name="orthanc", ae_title=orthanc.AE_TITLE, send_secondary_capture=True)
    worker.wait_ready()
    dispatcher.wait_ready()
    logs = [lambda: dicom_receiver.log, lambda: worker.log, lambda: dispatcher.log, lambda: orthanc.log]

    pacs = httpx.Client(base_url=orthanc.url, timeout=60, trust_env=False)
    pa_bytes = SAMPLES[0].read_bytes()
    lateral_bytes = changed(pa_bytes, ViewPosition="LL")
    pa = pacs.post("/instances", content=pa_bytes).json()
    lateral = pacs.post("/instances", content=lateral_bytes).json()
    study_id = pa["ParentStudy"]
    assert lateral["ParentStudy"] == study_id
    series_before = {s["ID"] for s in pacs.get(f"/studies/{study_id}/series").json()}
    resources = [pa["ID"], lateral["ID"]] if order == "pa_first" else [lateral["ID"], pa["ID"]]

    pushed_at = time.monotonic()
    pushed = pacs.post("/modalities/cxrq/store", json={"Resources": resources, "Synchronous": True})
    push_s = time.monotonic() - pushed_at
    assert pushed.status_code == 200, (pushed.text, orthanc.log[-3000:], dicom_receiver.log[-3000:])
    stored_at = dicom_receiver.log.index("event=dicom_stored")
    unscored_at = dicom_receiver.log.index("event=dicom_unscored")
    assert (stored_at < unscored_at) == (order == "pa_first")  # Orthanc sent them in the order asked

    (job,) = Job.objects.filter(client=hospital)
    (row,) = UnscoredInstance.objects.filter(client=hospital)
    assert (row.reason, row.attribute, row.value) == ("not_chest_xray", "ViewPosition", "LL")

    def delivered():
        return PacsDelivery.objects.filter(job=job, status=PacsDeliveryStatus.DELIVERED).first()

    _until("the SR and SC delivered to Orthanc", delivered, deadline, logs)
    back_s = time.monotonic() - pushed_at
    new_series = [s for s in pacs.get(f"/studies/{study_id}/series").json() if s["ID"] not in series_before]
    assert sorted(s["MainDicomTags"].get("Modality") for s in new_series) == ["OT", "SR"]  # SR, SC
    instances_in_study = len(pacs.get(f"/studies/{study_id}/instances").json())
    assert instances_in_study == 4

    again_at = time.monotonic()
    again = pacs.post("/modalities/cxrq/store", json={"Resources": [study_id], "Synchronous": True})
    again_s = time.monotonic() - again_at
    assert again.status_code == 200, (again.text, orthanc.log[-3000:], dicom_receiver.log[-3000:])
    assert Job.objects.filter(client=hospital).count() == 1
    reasons = sorted(UnscoredInstance.objects.filter(client=hospital).values_list("reason", "times_received"))
    assert reasons == [("duplicate", 1), ("not_chest_xray", 2), ("own_output", 1), ("own_output", 1)]
    assert "event=dicom_refused" not in dicom_receiver.log
    with capsys.disabled():
        print(
            f"\nwhole study from Orthanc ({order}): push of PA + lateral {push_s * 1000:.0f} ms; "
            f"SR + SC back in the study {back_s:.2f}s after the push; re-push of the study "
            f"({instances_in_study} instances, cxrq's SR and SC among them) {again_s * 1000:.0f} ms; "
            f"{_machine()}"
        )

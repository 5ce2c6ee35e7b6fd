"""The receiver against real dcmtk peers (storescu, echoscu) and a real `run_dicom` process."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from backend.dicomnet.models import ReturnPath, UnscoredInstance
from backend.dicomnet.returnpath import return_path_for
from backend.jobs.models import Job, JobStatus, Priority
from tests.dicomnet.factories import (
    SAMPLES,
    changed,
    corrupt_sample,
    cr_chest,
    echoscu,
    non_image,
    pynetdicom_store,
    storescu,
    write,
)

pytestmark = pytest.mark.django_db(transaction=True)

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
GRAYSCALE_PR = "1.2.840.10008.5.1.4.1.1.11.1"


def test_echo_from_a_configured_sender_is_answered(start_scp, sender):
    scp = start_scp()
    out = echoscu(scp.port, aet="MODALITY")
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_unknown_calling_ae_title_is_rejected_at_association(start_scp, sender):
    scp = start_scp()
    out = echoscu(scp.port, aet="STRANGER")
    assert out.returncode != 0
    assert "Calling AE Title Not Recognized" in out.stdout + out.stderr
    assert "event=dicom_association_rejected calling_ae=STRANGER" in scp.log
    assert "reason=unknown_calling_ae" in scp.log


def test_a_disabled_sender_or_a_wrong_address_is_rejected(start_scp, sender):
    scp = start_scp()
    sender.allowed_host = "10.20.0.0/16"
    sender.save()
    out = echoscu(scp.port, aet="MODALITY")
    assert out.returncode != 0  # closed at accept: no enabled sender may connect from here
    assert "reason=address_not_a_sender" in scp.log
    sender.allowed_host = "127.0.0.1"
    sender.save()
    assert echoscu(scp.port, aet="MODALITY").returncode == 0
    sender.enabled = False
    sender.save()
    assert echoscu(scp.port, aet="MODALITY").returncode != 0
    assert "reason=sender_disabled" in scp.log


def test_a_wrong_called_ae_title_is_rejected(start_scp, sender):
    scp = start_scp()
    out = subprocess.run(
        ["echoscu", "-aet", "MODALITY", "-aec", "NOTCXRQ", "127.0.0.1", str(scp.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "Called AE Title Not Recognized" in out.stdout + out.stderr


def test_with_the_called_title_check_off_dcmtks_default_is_answered(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_REQUIRE_CALLED_AE_TITLE="false")
    out = subprocess.run(
        ["echoscu", "-aet", "MODALITY", "127.0.0.1", str(scp.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr  # called ANY-SCP
    assert echoscu(scp.port, aet="STRANGER").returncode != 0  # the calling title still counts


def test_the_sample_files_become_jobs_of_the_senders_client_with_its_priority(start_scp, sender, hospital):
    scp = start_scp()
    out = storescu(scp.port, *SAMPLES, aet="MODALITY")
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = list(Job.objects.filter(client=hospital))
    assert len(jobs) == len(SAMPLES) == 2
    assert {job.status for job in jobs} == {JobStatus.QUEUED}
    assert {job.priority for job in jobs} == {Priority.STAT}
    assert {job.image_format for job in jobs} == {"DICOM"}
    originals = {
        str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in SAMPLES)
    }
    for job in jobs:
        info = return_path_for(job)
        assert info is not None
        original = originals[info.sop_instance_uid]
        assert info.patient_id == str(original.PatientID)
        assert info.patient_name == str(original.PatientName)
        assert info.study_instance_uid == str(original.StudyInstanceUID)
        assert info.series_instance_uid == str(original.SeriesInstanceUID)
        assert info.sop_class_uid == str(original.SOPClassUID)
        assert info.calling_ae_title == "MODALITY"
    assert scp.log.count("event=dicom_stored") == 2
    # Sent again: success, the same jobs (dedup per client).
    again = storescu(scp.port, *SAMPLES, aet="MODALITY")
    assert again.returncode == 0, again.stdout + again.stderr
    assert Job.objects.filter(client=hospital).count() == 2
    assert "deduplicated=True" in scp.log


def test_corrupt_instances_get_failure_statuses_and_leave_no_job(start_scp, sender, hospital, tmp_path):
    scp = start_scp()
    corrupt = write(tmp_path / "in", "corrupt.dcm", corrupt_sample())
    out = storescu(scp.port, corrupt, aet="MODALITY", extra=("-d",))
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert re.search(r"DIMSE Status\s*:\s*0xc000: Error", text), text[-3000:]
    assert re.search(r"ErrorComment.*\[invalid_image\]|\[invalid_image\].*ErrorComment", text)
    assert "event=dicom_refused code=invalid_image status=0xC000 calling_ae=MODALITY" in scp.log
    # Cut files (dcmtk will not send one; pynetdicom sends the bytes as they are): a lateral is not
    # scored whole, but cut it is refused, not recorded; so is a cut SR.
    lateral = changed(cr_chest(seed=1), ViewPosition="LL")
    sr = non_image(COMPREHENSIVE_SR, modality="SR")
    cut = [
        write(tmp_path / "in", "cut-lateral.dcm", lateral[: len(lateral) // 2]),
        write(tmp_path / "in", "cut-sr.dcm", sr[: sr.index(b"UNVERIFIED") + 4]),  # inside a value
    ]
    assert pynetdicom_store(scp.port, *cut) == [0xC000, 0xC000]
    assert scp.log.count("event=dicom_refused code=dicom_unreadable status=0xC000 calling_ae=MODALITY") == 2
    assert not Job.objects.exists()
    assert not ReturnPath.objects.exists()
    assert not UnscoredInstance.objects.exists()
    assert scp.alive
    assert echoscu(scp.port, aet="MODALITY").returncode == 0


def test_a_whole_study_is_answered_with_success_and_only_the_pa_scored(start_scp, sender, hospital, tmp_path):
    """PA, lateral, a hand, an SR and a presentation state of one study in one association."""
    scp = start_scp()
    study = "1.2.826.0.1.3680043.8.498.4711"
    pa = cr_chest(seed=2, study_uid=study, patient_id="PID-SECRET-4711", patient_name="SECRETPATIENT")
    files = [
        write(tmp_path / "study", "1-lateral.dcm", changed(pa, ViewPosition="LL")),
        write(tmp_path / "study", "2-sr.dcm", non_image(COMPREHENSIVE_SR, modality="SR", study_uid=study)),
        write(tmp_path / "study", "3-pa.dcm", pa),
        write(tmp_path / "study", "4-pr.dcm", non_image(GRAYSCALE_PR, modality="PR", study_uid=study)),
        write(tmp_path / "study", "5-hand.dcm", changed(pa, BodyPartExamined="HAND")),
    ]
    out = storescu(scp.port, *files, aet="MODALITY")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (job,) = Job.objects.filter(client=hospital)
    assert return_path_for(job).study_instance_uid == study
    rows = {
        (row.reason, row.attribute, row.value) for row in UnscoredInstance.objects.filter(client=hospital)
    }
    assert rows == {
        ("not_chest_xray", "ViewPosition", "LL"),
        ("not_chest_xray", "BodyPartExamined", "HAND"),
        ("not_an_image", "SOPClassUID", "Comprehensive SR Storage"),
        ("not_an_image", "SOPClassUID", "Grayscale Softcopy Presentation State Storage"),
    }
    assert scp.log.count("event=dicom_unscored") == 4 and scp.log.count("event=dicom_stored") == 1
    assert "event=dicom_refused" not in scp.log
    assert "SECRET" not in scp.log and "4711" not in scp.log
    # The study again: success throughout, no new job; the PA is a duplicate of its job.
    again = storescu(scp.port, *files, aet="MODALITY")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert Job.objects.filter(client=hospital).count() == 1
    assert UnscoredInstance.objects.get(reason="duplicate").job_id == job.id
    assert set(UnscoredInstance.objects.values_list("times_received", flat=True)) == {1, 2}


def test_fifty_instances_in_one_association_all_become_jobs(start_scp, sender, hospital, tmp_path):
    scp = start_scp()
    files = [
        write(tmp_path / "fifty", f"{i:02d}.dcm", cr_chest(seed=100 + i, patient_id=f"P{i}"))
        for i in range(50)
    ]
    started = time.monotonic()
    out = storescu(scp.port, *files, aet="MODALITY")
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert Job.objects.filter(client=hospital, priority=Priority.STAT).count() == 50
    assert ReturnPath.objects.count() == 50
    assert {return_path_for(job).patient_id for job in Job.objects.all()} == {f"P{i}" for i in range(50)}
    print(f"50 instances in one association: {elapsed:.2f}s")


def test_the_phi_is_in_no_log_line(start_scp, sender, tmp_path):
    scp = start_scp()
    path = write(
        tmp_path / "in",
        "phi.dcm",
        cr_chest(seed=3, patient_id="PID-SECRET-4711", patient_name="SECRET^PATIENT"),
    )
    assert storescu(scp.port, path, aet="MODALITY").returncode == 0
    assert "event=dicom_stored" in scp.log
    assert "SECRET" not in scp.log and "4711" not in scp.log


def test_an_idle_connection_is_dropped_and_others_are_served(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_ACSE_TIMEOUT_SECONDS=2, CXRQ_DICOM_NETWORK_TIMEOUT_SECONDS=2)
    idle = [socket.create_connection(("127.0.0.1", scp.port), timeout=20) for _ in range(3)]
    assert echoscu(scp.port, aet="MODALITY").returncode == 0  # served while they hang on
    started = time.monotonic()
    for sock in idle:
        assert sock.recv(1024) == b""  # closed by the receiver, not by us
        sock.close()
    assert time.monotonic() - started < 15
    # An association that is established and then sends nothing is ended too.
    quiet = _associate(scp.port)
    assert quiet.is_established
    deadline = time.monotonic() + 15
    while quiet.is_established and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not quiet.is_established
    assert scp.alive
    assert echoscu(scp.port, aet="MODALITY").returncode == 0


def _associate(port: int, aet: str = "MODALITY"):
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="CXRQ")


def test_past_the_maximum_associations_the_extra_one_is_rejected(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_MAX_ASSOCIATIONS=2)
    held = [_associate(scp.port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        extra = _associate(scp.port)
        assert extra.is_rejected
        assert (extra.acceptor.primitive.result, extra.acceptor.primitive.diagnostic) == (0x02, 0x02)
        assert "reason=too_many_associations" in scp.log
        for assoc in held:  # the others are still served
            assert assoc.send_c_echo().Status == 0x0000
    finally:
        for assoc in held:
            assoc.release()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        again = _associate(scp.port)
        if again.is_established:
            again.release()
            break
        time.sleep(0.2)
    else:
        pytest.fail("no association accepted once the others were released")


def test_concurrent_senders_are_all_served(start_scp, sender, hospital, tmp_path):
    scp = start_scp(CXRQ_DICOM_MAX_ASSOCIATIONS=4)
    folders = []
    for n in range(3):
        folders.append(
            [write(tmp_path / f"s{n}", f"{i}.dcm", cr_chest(seed=1000 + 10 * n + i)) for i in range(5)]
        )
    results = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(storescu(scp.port, *f, aet="MODALITY")))
        for f in folders
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0, 0]
    assert Job.objects.filter(client=hospital).count() == 15


def test_a_dataset_over_the_upload_limit_is_refused_or_cut_off(start_scp, sender, tmp_path):
    scp = start_scp(CXRQ_UPLOAD_MAX_BYTES=100_000)
    # Just over: received whole (the stream allowance covers it), refused by intake's limit.
    over = write(tmp_path / "in", "over.dcm", cr_chest(seed=61, size=256))
    out = storescu(scp.port, over, aet="MODALITY", extra=("-d",))
    assert out.returncode != 0
    assert re.search(r"DIMSE Status\s*:\s*0xc003: Error", out.stdout + out.stderr)
    assert "code=file_too_large status=0xC003" in scp.log
    # Far over: the connection is closed while it still arrives, not held in memory.
    huge = write(tmp_path / "in", "huge.dcm", cr_chest(seed=62, size=1024))
    out = storescu(scp.port, huge, aet="MODALITY")
    assert out.returncode != 0
    assert "code=file_too_large status=abort calling_ae=MODALITY" in scp.log
    assert not Job.objects.exists()
    assert scp.alive and echoscu(scp.port, aet="MODALITY").returncode == 0

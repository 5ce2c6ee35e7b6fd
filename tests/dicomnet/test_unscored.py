"""The receiver's service sorting what a PACS sends: eligible images become jobs, the rest of the
study is answered and recorded with its reason (backend/dicomnet/unscored.py), corrupt instances
are still refused."""

from __future__ import annotations

import io
from datetime import timedelta

import pydicom
import pytest
from django.test import override_settings
from django.utils import timezone

from backend.dicomnet import services
from backend.dicomnet.models import ReturnPath, UnscoredInstance, UnscoredReason, UnscoredTally
from backend.dicomnet.returnpath import return_path_for
from backend.dicomnet.unscored import unscored_prune
from backend.interop import sr as interop_sr
from backend.jobs.models import Job
from tests.dicomnet.factories import changed, cr_chest, non_image, uids
from tests.factories import client_and_key
from tests.pacs.factories import succeeded_dicom_job

pytestmark = pytest.mark.django_db

SECRETS = {"patient_id": "PID-SECRET-0815", "patient_name": "SECRETNAME^JOHN", "accession": "ACC-SECRET-77"}
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
GRAYSCALE_PR = "1.2.840.10008.5.1.4.1.1.11.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def receive(sender, data: bytes) -> services.Received:
    sop_class, sop_instance = uids(data)
    return services.instance_receive(
        sender=sender, part10=data, sop_class_uid=sop_class, sop_instance_uid=sop_instance
    )


def tally() -> dict[str, int]:
    return dict(UnscoredTally.objects.values_list("reason", "count"))


def test_a_lateral_is_recorded_not_scored_and_the_pa_of_its_study_is_scored(sender, hospital):
    pa = cr_chest(seed=1, study_uid="1.2.826.0.1.3680043.8.498.1", **SECRETS)
    lateral = changed(pa, ViewPosition="LL")
    received = receive(sender, lateral)
    assert received.job is None
    row = received.unscored
    assert (row.reason, row.attribute, row.value, row.detail) == (
        UnscoredReason.NOT_CHEST_XRAY,
        "ViewPosition",
        "LL",
        "view_not_accepted",
    )
    assert row.client == hospital and row.sender == sender and row.calling_ae_title == "MODALITY"
    assert (
        row.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1"
        and row.sop_class == "Computed Radiography Image Storage"
    )
    assert not Job.objects.exists() and not ReturnPath.objects.exists()
    scored = receive(sender, pa)
    assert scored.job is not None and scored.unscored is None
    assert Job.objects.count() == 1
    assert tally() == {"not_chest_xray": 1}


def test_body_part_modality_and_sop_class_say_which_attribute_refused(sender):
    hand = receive(sender, cr_chest(seed=2, body_part="HAND")).unscored
    assert (hand.reason, hand.attribute, hand.value) == ("not_chest_xray", "BodyPartExamined", "HAND")
    ct = receive(sender, changed(cr_chest(seed=3), SOPClassUID=CT_IMAGE, Modality="CT")).unscored
    assert (ct.reason, ct.attribute, ct.value) == ("not_chest_xray", "SOPClassUID", "CT Image Storage")
    assert ct.detail == "sop_class_not_accepted"
    free_text = receive(sender, cr_chest(seed=4, body_part="SECRETNAME")).unscored
    assert free_text.value == "other"  # a value outside the defined terms is never quoted back


def test_objects_that_are_not_images_are_recorded_as_such(sender):
    for sop_class, modality, name in (
        (COMPREHENSIVE_SR, "SR", "Comprehensive SR Storage"),
        (GRAYSCALE_PR, "PR", "Grayscale Softcopy Presentation State Storage"),
    ):
        received = receive(sender, non_image(sop_class, modality=modality))
        assert received.job is None
        row = received.unscored
        assert (row.reason, row.attribute, row.value, row.sop_class) == (
            "not_an_image",
            "SOPClassUID",
            name,
            name,
        )
    assert tally() == {"not_an_image": 2}
    assert not Job.objects.exists()


def test_images_cxrq_cannot_score_are_recorded_with_the_rule(sender):
    burned = receive(sender, changed(cr_chest(seed=5), BurnedInAnnotation="YES")).unscored
    assert (burned.reason, burned.attribute, burned.detail) == (
        "unsupported_image",
        "BurnedInAnnotation",
        "dicom_burned_in_annotation",
    )
    single = pydicom.dcmread(io.BytesIO(cr_chest(seed=5)))
    frames = changed(cr_chest(seed=5), NumberOfFrames=2, PixelData=single.PixelData * 2)
    multi = receive(sender, frames).unscored
    assert (multi.reason, multi.attribute, multi.detail) == (
        "unsupported_image",
        "NumberOfFrames",
        "dicom_multiframe",
    )
    assert not Job.objects.exists()


def test_cxrqs_own_sr_and_secondary_capture_are_recognised_and_never_scored(hospital, sender):
    job, _ = succeeded_dicom_job(hospital, seed=6)
    info = return_path_for(job)
    own_sr = interop_sr.to_bytes(interop_sr.build_sr(job=job, return_path=info))
    own_sc = interop_sr.to_bytes(interop_sr.build_secondary_capture(job=job, return_path=info))
    jobs_before = Job.objects.count()
    with override_settings(DICOM_ACCEPT_BURNED_IN_ANNOTATION=True):  # even where its SC would pass intake
        for data in (own_sr, own_sc):
            received = receive(sender, data)
            assert received.job is None
            assert (received.unscored.reason, received.unscored.attribute, received.unscored.value) == (
                "own_output",
                "Manufacturer",
                "cxrq",
            )
    assert Job.objects.count() == jobs_before
    # Another vendor's SR is not mistaken for it.
    other = receive(sender, non_image(COMPREHENSIVE_SR, modality="SR", manufacturer="cxrq-like ACME"))
    assert other.unscored.reason == "not_an_image"


def test_the_same_image_sent_again_is_a_duplicate_beside_its_job(sender):
    data = cr_chest(seed=7)
    first = receive(sender, data)
    again = receive(sender, data)
    assert first.unscored is None and again.deduplicated
    assert again.job.id == first.job.id
    assert (again.unscored.reason, again.unscored.job_id) == ("duplicate", first.job.id)
    assert Job.objects.count() == 1


def test_an_instance_sent_again_is_one_row_counted_twice(sender):
    lateral = changed(cr_chest(seed=8), ViewPosition="LL")
    first = receive(sender, lateral).unscored
    second = receive(sender, lateral).unscored
    assert first.id == second.id and second.times_received == 2
    assert second.last_received_at >= first.received_at
    assert UnscoredInstance.objects.count() == 1
    assert tally() == {"not_chest_xray": 2}


def test_no_identifier_of_the_instance_is_stored(sender):
    study = "1.2.826.0.1.3680043.8.498.424242"
    data = changed(cr_chest(seed=9, study_uid=study, **SECRETS), ViewPosition="LL")
    _, sop_instance = uids(data)
    row = receive(sender, data).unscored
    stored = " ".join(str(v) for v in UnscoredInstance.objects.filter(id=row.id).values().get().values())
    for secret in (*SECRETS.values(), "SECRETNAME", study, sop_instance):
        assert secret not in stored
    assert len(row.instance_key) == 64 and len(row.study_key) == 64
    # Same study, same key: one study's instances group together.
    other = receive(sender, non_image(GRAYSCALE_PR, modality="PR", study_uid=study)).unscored
    assert other.study_key == row.study_key and other.instance_key != row.instance_key


def test_the_keys_differ_between_clients(sender):
    data = changed(cr_chest(seed=10), ViewPosition="LL")
    mine = receive(sender, data).unscored
    elsewhere = services.sender_add(ae_title="ELSEWHERE", client=client_and_key("elsewhere")[0])
    theirs = receive(elsewhere, data).unscored
    assert theirs.id != mine.id and theirs.instance_key != mine.instance_key


def test_corrupt_or_truncated_instances_are_still_refused(sender):
    lateral = changed(cr_chest(seed=11), ViewPosition="LL")
    sop_class, sop_instance = uids(lateral)
    for cut in (len(lateral) - 1, len(lateral) // 2):
        with pytest.raises(services.InstanceUnreadable):
            services.instance_receive(
                sender=sender, part10=lateral[:cut], sop_class_uid=sop_class, sop_instance_uid=sop_instance
            )
    sr = non_image(COMPREHENSIVE_SR, modality="SR")
    with pytest.raises(services.InstanceUnreadable):
        receive(sender, sr[:-5])
    with pytest.raises(services.DatasetMismatch):
        services.instance_receive(
            sender=sender, part10=sr, sop_class_uid=COMPREHENSIVE_SR, sop_instance_uid="1.2.3.4"
        )
    assert not UnscoredInstance.objects.exists() and not Job.objects.exists()


@override_settings(DICOM_UNSCORED_RETENTION_DAYS=30)
def test_rows_past_retention_are_pruned_and_the_tally_stays(sender):
    old = receive(sender, changed(cr_chest(seed=12), ViewPosition="LL")).unscored
    fresh = receive(sender, changed(cr_chest(seed=13), ViewPosition="LL")).unscored
    UnscoredInstance.objects.filter(id=old.id).update(last_received_at=timezone.now() - timedelta(days=31))
    assert unscored_prune() == 1
    assert list(UnscoredInstance.objects.values_list("id", flat=True)) == [fresh.id]
    assert tally() == {"not_chest_xray": 2}
    with override_settings(DICOM_UNSCORED_RETENTION_DAYS=0):
        UnscoredInstance.objects.update(last_received_at=timezone.now() - timedelta(days=3650))
        assert unscored_prune() == 0


@pytest.mark.django_db(transaction=True)
def test_the_same_instance_from_two_associations_at_once_is_one_row(sender):
    """Two receiver threads record the same lateral together: the unique constraint and the
    service's retry leave one row received twice, and the tally counts both."""
    import threading

    from django.db import connections

    lateral = changed(cr_chest(seed=14), ViewPosition="LL")
    start = threading.Barrier(2)
    rows: list[int] = []

    def send() -> None:
        try:
            start.wait(timeout=10)
            rows.append(receive(sender, lateral).unscored.id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(rows) == 2 and rows[0] == rows[1]
    assert UnscoredInstance.objects.get().times_received == 2
    assert tally() == {"not_chest_xray": 2}


def test_a_lateral_cut_inside_its_encapsulated_frames_is_refused_by_position_alone(sender, monkeypatch):
    """An undefined-length Pixel Data without its delimiter: refused even where pydicom's warning
    about it is not seen (the warnings filter is process-wide; another thread may hold it)."""
    import re

    from backend.dicomnet import instances
    from tests.dicomnet.factories import SAMPLES

    monkeypatch.setattr(instances, "_TRUNCATED", re.compile(r"(?!)"))
    lateral = changed(SAMPLES[0].read_bytes(), ViewPosition="LL")
    sop_class, sop_instance = uids(lateral)
    for fraction in (0.3, 0.6, 0.99):
        with pytest.raises(services.InstanceUnreadable):
            services.instance_receive(
                sender=sender,
                part10=lateral[: int(len(lateral) * fraction)],
                sop_class_uid=sop_class,
                sop_instance_uid=sop_instance,
            )
    assert receive(sender, lateral).unscored.attribute == "ViewPosition"  # whole, it is recorded

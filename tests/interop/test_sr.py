"""GET /api/v1/jobs/{id}/sr.dcm: the DICOM SR, read back with pydicom and highdicom, checked by
dciodvfy; and the Secondary Capture beside it."""

from __future__ import annotations

import io
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr import _concepts_dict
from pydicom.sr.codedict import codes
from rest_framework.test import APIClient

from backend.dicomnet.returnpath import ReturnPathInfo, return_path_for
from backend.interop import findings, sr
from backend.jobs.model_identity import LABELS, current_model_version
from backend.jobs.services import deletion
from tests.factories import assert_error, authorization, client_and_key, default_client
from tests.interop.factories import PATIENT, http_dicom_job, png_job, received_job, succeed

pytestmark = pytest.mark.django_db


def get_sr(api: APIClient, job_id) -> pydicom.Dataset:
    response = api.get(f"/api/v1/jobs/{job_id}/sr.dcm", HTTP_ACCEPT="application/dicom")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/dicom"
    return pydicom.dcmread(io.BytesIO(response.content))


def groups_by_label(report: hd.sr.ComprehensiveSR) -> dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]:
    template = report.content
    assert isinstance(template, hd.sr.MeasurementReport)
    return {group.tracking_identifier: group for group in template.get_image_measurement_groups()}


def measurement_value(group, name) -> float:
    (measurement,) = [m for m in group.get_measurements() if m.name == name]
    return float(measurement.value)


def test_an_http_uploads_sr_parses_and_carries_the_18_stored_probabilities(api):
    (job,) = succeed(png_job(default_client()))
    ds = get_sr(api, job.id)

    assert ds.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert ds.Modality == "SR"
    report = hd.sr.ComprehensiveSR.from_dataset(ds)
    groups = groups_by_label(report)
    assert len(groups) == 18
    stored = job.result.probabilities
    for label in LABELS:
        group = groups[label.replace("_", " ")]
        probability = measurement_value(group, codes.DCM.Probability)
        assert probability == pytest.approx(stored[label], abs=1e-9)
        assert measurement_value(group, codes.DCM.ThresholdValue) == 0.5
        (evaluation,) = group.get_qualitative_evaluations()
        expected = codes.DCM.Present if stored[label] >= 0.5 else codes.DCM.Absent
        assert evaluation.value == expected
        value, scheme, _ = findings.finding_code(label)
        assert (group.finding_type.value, group.finding_type.scheme_designator) == (value, scheme)
    # Both answers occur in this result, so the check above tested each way.
    assert {p >= 0.5 for p in stored.values()} == {True, False}

    # An HTTP upload of a PNG: a study of its own, no patient identity, nothing to reference.
    assert ds.PatientID == "" and str(ds.PatientName) == "" and ds.AccessionNumber == ""
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.PreliminaryFlag == "PRELIMINARY"


def test_the_sr_names_the_algorithm_and_says_its_weights_are_untrained(api):
    (job,) = succeed(png_job(default_client()))
    ds = get_sr(api, job.id)
    assert ds.SeriesDescription == sr.SERIES_DESCRIPTION + sr.UNTRAINED_SUFFIX
    assert len(ds.SeriesDescription) <= 64
    report = hd.sr.ComprehensiveSR.from_dataset(ds)
    group = next(iter(groups_by_label(report).values()))

    def texts(name) -> list[str]:
        return [item.value for item in group[0].ContentSequence.find(name)]

    assert texts(codes.DCM.AlgorithmName) == ["densenet121-res224-all"]
    assert texts(codes.DCM.AlgorithmVersion) == [current_model_version()]
    parameters = texts(codes.DCM.AlgorithmParameters)
    assert "weights=untrained" in parameters
    assert f"weights_sha256={'5f' * 32}" in parameters
    observer = report.content[0].ContentSequence.find(codes.DCM.DeviceObserverName)
    assert [item.value for item in observer] == ["densenet121-res224-all"]


def test_a_dicom_sourced_jobs_sr_is_filed_in_the_senders_study_and_references_its_image(api):
    job, sent = received_job(default_client())
    (job,) = succeed(job)
    ds = get_sr(api, job.id)

    assert ds.StudyInstanceUID == sent.StudyInstanceUID
    assert ds.PatientID == PATIENT["patient_id"]
    assert str(ds.PatientName) == PATIENT["patient_name"]
    assert ds.AccessionNumber == PATIENT["accession"]
    assert ds.SeriesInstanceUID not in (sent.SeriesInstanceUID, "")
    assert ds.SOPInstanceUID != sent.SOPInstanceUID
    (evidence,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == sent.StudyInstanceUID
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == sent.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert (instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID) == (
        sent.SOPClassUID,
        sent.SOPInstanceUID,
    )
    report = hd.sr.ComprehensiveSR.from_dataset(ds)
    for group in groups_by_label(report).values():
        (source,) = group.source_images
        assert source.referenced_sop_instance_uid == sent.SOPInstanceUID
        assert source.referenced_sop_class_uid == sent.SOPClassUID
    assert report.get_evidence() == [
        (sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID, sent.SOPClassUID)
    ]

    # Built again: the same object (a PACS receiving it twice keeps one).
    again = get_sr(api, job.id)
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == (ds.SeriesInstanceUID, ds.SOPInstanceUID)
    # Another job: other UIDs.
    other, _ = received_job(default_client(), ae_title="MODALITY2", seed=3)
    (other,) = succeed(other, seed=1)
    third = get_sr(api, other.id)
    assert third.SeriesInstanceUID != ds.SeriesInstanceUID and third.SOPInstanceUID != ds.SOPInstanceUID


def test_an_http_dicom_upload_references_the_de_identified_instance_cxrq_keeps(api):
    (job,) = succeed(http_dicom_job(default_client()))
    stored = pydicom.dcmread(job.upload.path, stop_before_pixels=True)
    ds = get_sr(api, job.id)
    assert ds.StudyInstanceUID == stored.StudyInstanceUID
    assert ds.PatientID == "" and PATIENT["patient_id"] not in str(ds)
    (evidence,) = ds.CurrentRequestedProcedureEvidenceSequence
    (instance,) = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == stored.SOPInstanceUID


def test_once_the_image_is_gone_the_sr_references_nothing_and_is_another_object(api):
    (job,) = succeed(http_dicom_job(default_client(), seed=4))
    before = get_sr(api, job.id)
    deletion.images_delete([job.id])
    after = get_sr(api, job.id)
    assert "CurrentRequestedProcedureEvidenceSequence" not in after
    assert after.StudyInstanceUID != before.StudyInstanceUID
    assert after.SOPInstanceUID != before.SOPInstanceUID
    groups = groups_by_label(hd.sr.ComprehensiveSR.from_dataset(after))
    assert len(groups) == 18 and all(not group.source_images for group in groups.values())


def test_a_return_path_given_directly_files_the_sr_and_keeps_a_non_ascii_name(tmp_path):
    (job,) = succeed(png_job(default_client(), seed=7))
    info = ReturnPathInfo(
        patient_id="PID-Ä-1",
        patient_name="MÜLLER^JÖRG",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1001",
        accession_number="ACC-1",
        series_instance_uid="1.2.826.0.1.3680043.8.498.1002",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.1003",
        sop_class_uid=pydicom.uid.DigitalXRayImageStorageForPresentation,
        calling_ae_title="PACS1",
    )
    read = pydicom.dcmread(io.BytesIO(sr.to_bytes(sr.build_sr(job=job, return_path=info))))
    assert read.SpecificCharacterSet == "ISO_IR 192"
    assert str(read.PatientName) == "MÜLLER^JÖRG" and read.PatientID == "PID-Ä-1"
    assert read.StudyInstanceUID == info.study_instance_uid
    (series,) = read.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert series.SeriesInstanceUID == info.series_instance_uid
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == info.sop_class_uid


def test_another_clients_job_is_not_found_and_an_unfinished_or_deleted_job_has_no_sr(api):
    other_client, other_key = client_and_key("hospital-b")
    (theirs,) = succeed(png_job(other_client, seed=5))
    assert_error(api.get(f"/api/v1/jobs/{theirs.id}/sr.dcm"), 404, "job_not_found")
    assert_error(api.get("/api/v1/jobs/not-a-uuid/sr.dcm"), 404, "job_not_found")

    queued = png_job(default_client(), seed=6)
    error = assert_error(
        api.get(f"/api/v1/jobs/{queued.id}/sr.dcm", HTTP_ACCEPT="application/dicom"), 409, "job_not_succeeded"
    )
    assert error["details"] == {"status": "queued"}

    their_api = APIClient()
    their_api.credentials(**{"HTTP_" + k.upper(): v for k, v in authorization(other_key).items()})
    deletion.job_delete(client=other_client, job_id=theirs.id)
    assert_error(their_api.get(f"/api/v1/jobs/{theirs.id}/sr.dcm"), 410, "job_deleted")


def test_every_standard_finding_code_is_the_ps3_16_concept_it_says():
    for label in LABELS:
        value, scheme, meaning = findings.finding_code(label)
        if scheme == findings.PRIVATE_SCHEME:
            assert value == label.replace(" ", "_")
            continue
        meanings = {
            entry[0]
            for entries in _concepts_dict.concepts[scheme].values()
            for code, entry in entries.items()
            if code == value
        }
        assert meaning in meanings, label


def _dciodvfy(ds: pydicom.Dataset, tmp_path) -> str:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed: apt-get install dicom3tools")
    path = tmp_path / "object.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def test_dciodvfy_finds_no_error_in_the_sr(api, tmp_path):
    job, _ = received_job(default_client())
    (job,) = succeed(job)
    report = _dciodvfy(get_sr(api, job.id), tmp_path)
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report


def test_the_secondary_capture_shows_the_findings_beside_the_image_in_the_same_study(tmp_path):
    job, sent = received_job(default_client())
    (job,) = succeed(job)
    sc = sr.build_secondary_capture(job=job, return_path=return_path_for(job))
    read = pydicom.dcmread(io.BytesIO(sr.to_bytes(sc)))
    assert read.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert read.StudyInstanceUID == sent.StudyInstanceUID and read.PatientID == PATIENT["patient_id"]
    assert read.BurnedInAnnotation == "YES"
    pixels = read.pixel_array
    assert pixels.shape[0] == sr.SC_HEIGHT and pixels.shape[1] > sr.SC_TABLE_WIDTH
    table = pixels[:, -sr.SC_TABLE_WIDTH :]
    assert np.count_nonzero(table) > 1000  # text was drawn
    assert read.SourceImageSequence[0].ReferencedSOPInstanceUID == sent.SOPInstanceUID
    report = _dciodvfy(read, tmp_path)
    assert not [line for line in report.splitlines() if line.startswith("Error")], report

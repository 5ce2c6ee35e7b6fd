"""A job's result as DICOM: a Comprehensive SR (TID 1500 Imaging Measurement Report, as the IHE
AI Results profile encodes AI findings) and, for viewers without SR, a Secondary Capture image
with the findings beside the image.

The SR (docs/interoperability.md):

    Imaging Measurement Report (TID 1500)
      Language: English; Observer: device (the algorithm: model name, version)
      Procedure reported: XR (LOINC 43468-8)
      Imaging Measurements
        one Measurement Group (TID 1501) per label, 18 in the model's order:
          Tracking Identifier: the label; Tracking UID: stable per job and label
          Finding: the label's code (findings.finding_code)
          Algorithm Name / Version / Parameters (weights, weights sha256, ...)
          Source image for measurement group: the analysed instance, where there is one
          Probability (DCM 122157) = p, unit {probability}
          Threshold Value (DCM 122411) = 0.5, unit {probability}: the operating point after op_norm
          <the label's code> = Present / Absent (Presence Undetermined: no operating point)

Filed in the sender's study (Patient ID, Patient's Name, Study Instance UID, Accession Number from
the return path) for a DICOM-sourced job, else as findings.placement_for says. Series and instance
UIDs are new, and the same each time the same job's report is built (findings.derived_uid).
"""

from __future__ import annotations

import io
import logging

import highdicom as hd
import numpy as np
import pydicom
from django.conf import settings
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFont, ImageOps
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from backend.dicomnet.returnpath import ReturnPathInfo
from backend.interop import findings
from backend.interop.findings import Placement, Report
from backend.jobs.models import Job

# highdicom logs the UIDs of the datasets it copies from at INFO: for a DICOM-sourced job those
# are the sender's study and instance (PHI), which never go into a log line.
logging.getLogger("highdicom").setLevel(logging.WARNING)

MANUFACTURER = "cxrq"
SERIES_DESCRIPTION = "cxrq CXR AI findings"
SC_SERIES_DESCRIPTION = "cxrq CXR AI findings (image)"
# Said where a radiologist sees the series, whenever the result came from the untrained fallback.
UNTRAINED_SUFFIX = " - UNTRAINED, not for diagnosis"
# High numbers, out of the way of the modality's own series.
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
PROBABILITY_UNIT = hd.sr.CodedConcept(value="{probability}", scheme_designator="UCUM", meaning="probability")
PROCEDURE_REPORTED = codes.LN.XRUnspecifiedBodyRegion
SC_TABLE_WIDTH = 760
SC_HEIGHT = 1024


def series_description(report: Report, base: str = SERIES_DESCRIPTION) -> str:
    return base + (UNTRAINED_SUFFIX if report.algorithm.untrained else "")


def _code(finding: findings.Finding) -> hd.sr.CodedConcept:
    value, scheme, meaning = finding.code
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _presence(finding: findings.Finding) -> pydicom.sr.coding.Code:
    if finding.positive is None:
        return codes.DCM.PresenceUndetermined
    return codes.DCM.Present if finding.positive else codes.DCM.Absent


def _checked_name(name: str) -> str:
    """The name as highdicom's check_person_name accepts it without a warning. A name with one
    component (no `^`) is valid DICOM, but the check warns, quoting it, and a warning can reach a
    log (PHI). A trailing `^` means the same name (PS3.5 6.2.1.1); the builders give highdicom this
    form and put the sender's own value back once it is built. Chosen over catching the warning:
    warnings.catch_warnings changes process-wide state and is not safe on the request threads."""
    return name if not name or "^" in name else name + "^"


def _evidence(place: Placement) -> pydicom.Dataset:
    """What highdicom copies the patient and study from (and lists as evidence when referenced)."""
    ds = pydicom.Dataset()
    # The return path keeps the values, not the sender's character set: UTF-8 says any of them.
    identity = (place.patient_id, place.patient_name, place.accession_number)
    if not all(value.isascii() for value in identity):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = place.study_instance_uid
    ds.PatientID = place.patient_id
    ds.PatientName = _checked_name(place.patient_name)  # the sender's value is put back after
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = place.accession_number
    ds.StudyID = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    if place.image is not None:
        ds.SeriesInstanceUID = place.image.series_instance_uid
        ds.SOPInstanceUID = place.image.sop_instance_uid
        ds.SOPClassUID = place.image.sop_class_uid
    else:  # listed nowhere: the evidence sequence is removed after (nothing is referenced)
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    return ds


def _group(
    report: Report, finding: findings.Finding, algorithm: hd.sr.AlgorithmIdentification, place: Placement
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    code = _code(finding)
    source = (
        [
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=place.image.sop_class_uid,
                referenced_sop_instance_uid=place.image.sop_instance_uid,
            )
        ]
        if place.image is not None
        else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=findings.derived_uid(report.job, "finding", finding.label), identifier=finding.name
        ),
        finding_type=code,
        algorithm_id=algorithm,
        source_images=source,
        measurements=[
            hd.sr.Measurement(name=codes.DCM.Probability, value=finding.probability, unit=PROBABILITY_UNIT),
            hd.sr.Measurement(
                name=codes.DCM.ThresholdValue, value=findings.OPERATING_POINT, unit=PROBABILITY_UNIT
            ),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=code, value=_presence(finding))],
    )


def _dicom_datetime(report: Report) -> tuple[str, str]:
    local = timezone.localtime(report.completed_at) if settings.USE_TZ else report.completed_at
    return local.strftime("%Y%m%d"), local.strftime("%H%M%S.%f")


def build_sr(*, job: Job, return_path: ReturnPathInfo | None) -> pydicom.Dataset:
    """The job's Comprehensive SR (JobNotSucceeded / JobDeleted when it has no result)."""
    report = findings.report_for(job)
    place = findings.placement_for(job, return_path)
    algo = report.algorithm
    algorithm = hd.sr.AlgorithmIdentification(
        name=algo.name,
        version=algo.version,
        parameters=[f"{key}={value}" for key, value in algo.parameters().items()],
        manufacturer=MANUFACTURER,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=findings.stable_uid("device", algo.version),
            name=algo.name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=algo.version[:64],
        ),
    )
    measurement_report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=[_group(report, f, algorithm, place) for f in report.findings],
    )
    series_uid = findings.derived_uid(job, "sr-series", place.study_instance_uid)
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(place)],
        content=measurement_report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=findings.derived_uid(job, "sr-instance", place.study_instance_uid),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # an unverified machine result: PRELIMINARY until a radiologist signs it
        series_description=series_description(report),
    )
    if place.image is None:
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                delattr(sr, keyword)
    if any(f.code[1] == findings.PRIVATE_SCHEME for f in report.findings):
        scheme = pydicom.Dataset()
        scheme.CodingSchemeDesignator = findings.PRIVATE_SCHEME
        scheme.CodingSchemeName = "cxrq chest X-ray findings (torchxrayvision labels)"
        scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
        sr.CodingSchemeIdentificationSequence = [*sr.get("CodingSchemeIdentificationSequence", []), scheme]
    sr.PatientName = place.patient_name
    date, time = _dicom_datetime(report)
    sr.ContentDate, sr.ContentTime = date, time
    sr.SeriesDate, sr.SeriesTime = date, time
    sr.InstanceCreationDate, sr.InstanceCreationTime = date, time
    sr.SoftwareVersions = algo.version[:64]
    return sr


def to_bytes(ds: pydicom.Dataset) -> bytes:
    """A DICOM Part 10 file (preamble, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --- the Secondary Capture: the image and the findings side by side ---------------------------


def _source_pixels(job: Job) -> Image.Image | None:
    """The stored (de-identified) image as 8-bit grey, displayed as a viewer would; None once gone."""
    if job.image_deleted_at or not job.upload:
        return None
    try:
        with job.upload.open("rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if job.image_format.upper() == "DICOM":
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array.astype(np.float64)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            arr = pydicom.pixels.apply_voi_lut(arr, ds)
        low, high = float(arr.min()), float(arr.max())
        scaled = (arr - low) / (high - low or 1.0) * 255.0
        if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
            scaled = 255.0 - scaled
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("L")


def _render(report: Report, source: Image.Image | None) -> np.ndarray:
    height = SC_HEIGHT
    image_width = 0
    if source is not None:
        source = ImageOps.contain(source, (height, height))
        image_width = source.width
    canvas = Image.new("L", (image_width + SC_TABLE_WIDTH, height), 0)
    if source is not None:
        canvas.paste(source, (0, (height - source.height) // 2))
    draw = ImageDraw.Draw(canvas)
    title = ImageFont.load_default(size=30)
    body = ImageFont.load_default(size=26)
    x, y = image_width + 24, 24
    draw.text((x, y), "cxrq AI findings", fill=255, font=title)
    y += 44
    algo = report.algorithm
    draw.text((x, y), f"{algo.name}  {algo.weights}", fill=200, font=body)
    y += 36
    if algo.untrained:
        draw.text((x, y), "UNTRAINED MODEL - NOT FOR DIAGNOSIS", fill=255, font=body)
        y += 36
    right = x + SC_TABLE_WIDTH - 120  # the probabilities' right edge
    draw.text((x + 30, y), "finding", fill=160, font=body)
    draw.text((right, y), "probability", fill=160, font=body, anchor="ra")
    y += 40
    for finding in sorted(report.findings, key=lambda f: (-f.probability, f.label)):
        fill = 255 if finding.positive else 170
        draw.text((x, y), {True: "+", False: "", None: "?"}[finding.positive], fill=fill, font=body)
        draw.text((x + 30, y), finding.name, fill=fill, font=body)
        draw.text((right, y), f"{finding.probability * 100:.1f}%", fill=fill, font=body, anchor="ra")
        y += 38
    draw.text((x, height - 44), "+ at or above the model's operating point", fill=160, font=body)
    return np.asarray(canvas, dtype=np.uint8)


def build_secondary_capture(*, job: Job, return_path: ReturnPathInfo | None) -> pydicom.Dataset:
    """The findings table rendered beside the image (8-bit MONOCHROME2), in the SR's study and
    with the same UIDs rule; for viewers that do not show SR. The delivery chooses to send it."""
    report = findings.report_for(job)
    place = findings.placement_for(job, return_path)
    pixels = _render(report, _source_pixels(job))
    date, time = _dicom_datetime(report)
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=place.study_instance_uid,
        series_instance_uid=findings.derived_uid(job, "sc-series", place.study_instance_uid),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=findings.derived_uid(job, "sc-instance", place.study_instance_uid),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=place.patient_id,
        patient_name=_checked_name(place.patient_name),
        accession_number=place.accession_number,
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series_description(report, SC_SERIES_DESCRIPTION),
    )
    sc.PatientName = place.patient_name
    # The findings are text in the pixels; no patient identity is drawn.
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # Type 2C: a chest is not a paired body part; dciodvfy wants it present
    sc.ContentDate, sc.ContentTime = date, time
    sc.SeriesDate, sc.SeriesTime = date, time
    if place.image is not None:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = place.image.sop_class_uid
        item.ReferencedSOPInstanceUID = place.image.sop_instance_uid
        item.PurposeOfReferenceCodeSequence = [
            hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
        ]
        sc.SourceImageSequence = [item]
    return sc

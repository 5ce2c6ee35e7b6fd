"""What a report says, whatever its format: the findings, the algorithm, and where it belongs.

- Findings: the 18 stored probabilities in the model's label order, each with the model's raw
  operating threshold (torchxrayvision's `op_threshs`) and whether it passes it. The stored
  probabilities are after torchxrayvision's op_norm, which moves every label's operating point to
  0.5 (backend/web/thresholds.py), so "passes" is `probability >= 0.5`; a label without an
  operating point passes nothing (undetermined).
- Codes: a label gets the SNOMED CT or DICOM code that DICOM PS3.16 (as pydicom ships it) gives the
  same concept; the others a private code, scheme `99CXRQ` (PS3.16 8.2: private schemes start
  with 99), valued with the model's own label. Nothing here is guessed from memory.
- Algorithm: model name, version, weights identity (sha256, or `untrained` for the fallback that
  dev and test run), preprocessing and precision, from the result's provenance.
- Source: for a job that came over DICOM, the original study and instance from its return path
  (PHI, only in memory); for an HTTP upload stored as DICOM, the de-identified instance cxrq keeps
  (its own study, no patient identity); otherwise nothing to reference (a PNG or JPEG upload, or
  an image already gone to retention).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import pydicom
from pydicom.errors import InvalidDicomError

from backend.dicomnet.returnpath import ReturnPathInfo
from backend.interop import errors
from backend.jobs.model_identity import LABELS, MODEL_NAME, UNTRAINED
from backend.jobs.models import Job, JobStatus
from backend.web import thresholds
from backend.web.results import Finding as ShownFinding

logger = logging.getLogger(__name__)

PRIVATE_SCHEME = "99CXRQ"
_UID_NAMESPACE = uuid.UUID("0b9f3f0e-5c7a-5d1e-9a52-6c7871720001")
# The probabilities' scale puts every operating point here (op_norm).
OPERATING_POINT = thresholds.CALIBRATED_OPERATING_POINT

# label -> (code value, coding scheme designator, code meaning); the standard ones are the
# entries of pydicom's PS3.16 dictionary for exactly this concept (tests check each against it).
_STANDARD_CODES: dict[str, tuple[str, str, str]] = {
    "Infiltration": ("112121", "DCM", "Infiltrate"),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "Edema": ("19242006", "SCT", "Pulmonary edema"),
    "Fibrosis": ("112674009", "SCT", "Fibrosis"),
    "Effusion": ("60046008", "SCT", "Pleural effusion"),
    "Cardiomegaly": ("287272002", "SCT", "Cardiomegaly"),
    "Nodule": ("27925004", "SCT", "Nodule"),
    "Mass": ("4147007", "SCT", "Mass"),
    "Lung Opacity": ("112001", "DCM", "Opacity"),
}


def finding_code(label: str) -> tuple[str, str, str]:
    """(code value, scheme, meaning) of a label: a standard code where PS3.16 has the concept."""
    return _STANDARD_CODES.get(label) or (label.replace(" ", "_"), PRIVATE_SCHEME, label.replace("_", " "))


@dataclass(frozen=True)
class Finding(ShownFinding):
    """A finding as the web client shows it (label, probability, operating point, `above`), with
    what the SR and FHIR add: positive, and the code."""

    @property
    def positive(self) -> bool | None:
        """Passes the model's operating point; None where the model has none for this label."""
        return self.above

    @property
    def code(self) -> tuple[str, str, str]:
        return finding_code(self.label)


@dataclass(frozen=True)
class Algorithm:
    name: str
    version: str  # the model version (weights, preprocessing, options): the result cache's key
    weights: str  # "untrained" (the fallback) or the official weights' kind
    weights_sha256: str  # of the weights that ran (the fallback's own for untrained)
    preprocessing: str
    precision: str

    @property
    def untrained(self) -> bool:
        return self.weights == UNTRAINED

    def parameters(self) -> dict[str, str]:
        return {
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing,
            "precision": self.precision,
            "operating_point": f"{OPERATING_POINT} (torchxrayvision op_norm)",
        }


@dataclass(frozen=True)
class SourceImage:
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class Placement:
    """Where a report is filed and what it references. PHI only for a DICOM-sourced job."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    image: SourceImage | None
    from_dicom_sender: bool

    def __repr__(self) -> str:  # never the PHI in a log line
        return f"Placement(from_dicom_sender={self.from_dicom_sender}, image={self.image is not None})"


@dataclass(frozen=True)
class Report:
    job: Job
    findings: list[Finding]
    algorithm: Algorithm
    completed_at: datetime


def report_for(job: Job) -> Report:
    """The facts of a succeeded job's result; JobDeleted or JobNotSucceeded otherwise."""
    if job.status == JobStatus.DELETED:
        raise errors.JobDeleted(
            details={"deleted_at": job.deleted_at.isoformat() if job.deleted_at else None}
        )
    result = getattr(job, "result", None) if job.status == JobStatus.SUCCEEDED else None
    if result is None:
        raise errors.JobNotSucceeded(details={"status": job.status.lower()})
    points = thresholds.operating_points()
    probabilities = result.probabilities
    # The model's order, then anything else the result holds (a future model's extra labels).
    labels = [label for label in LABELS if label in probabilities]
    labels += [label for label in probabilities if label not in LABELS]
    findings = [
        Finding(label=label, probability=float(probabilities[label]), operating_point=points.get(label))
        for label in labels
    ]
    prov = result.provenance or {}
    weights = str(prov.get("weights") or "")
    algorithm = Algorithm(
        name=str(prov.get("model") or MODEL_NAME),
        version=str(prov.get("model_version") or job.model_version),
        weights=weights or "unknown",
        weights_sha256=str(
            (prov.get("fallback_weights_sha256") if weights == UNTRAINED else prov.get("weights_sha256"))
            or "unknown"
        ),
        preprocessing=str(prov.get("preprocessing") or "unknown"),
        precision=str(prov.get("precision") or "unknown"),
    )
    return Report(
        job=job, findings=findings, algorithm=algorithm, completed_at=job.finished_at or result.created_at
    )


def stored_dicom_instance(job: Job) -> pydicom.Dataset | None:
    """The header of the de-identified DICOM cxrq stores for the job, while it keeps the image."""
    if job.image_format.upper() != "DICOM" or job.image_deleted_at or not job.upload:
        return None
    try:
        with job.upload.open("rb") as handle:
            return pydicom.dcmread(handle, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError):
        logger.warning("event=stored_dicom_unreadable job_id=%s", job.pk)
        return None


def placement_for(job: Job, return_path: ReturnPathInfo | None) -> Placement:
    """Where a report of this job is filed (see the module's note)."""
    if return_path is not None:
        return Placement(
            study_instance_uid=return_path.study_instance_uid,
            patient_id=return_path.patient_id,
            patient_name=return_path.patient_name,
            accession_number=return_path.accession_number,
            image=SourceImage(
                sop_class_uid=return_path.sop_class_uid,
                sop_instance_uid=return_path.sop_instance_uid,
                series_instance_uid=return_path.series_instance_uid,
            ),
            from_dicom_sender=True,
        )
    stored = stored_dicom_instance(job)
    if stored is not None and all(
        stored.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    ):
        return Placement(
            study_instance_uid=str(stored.StudyInstanceUID),
            patient_id="",
            patient_name="",
            accession_number="",
            image=SourceImage(
                sop_class_uid=str(stored.SOPClassUID),
                sop_instance_uid=str(stored.SOPInstanceUID),
                series_instance_uid=str(stored.SeriesInstanceUID),
            ),
            from_dicom_sender=False,
        )
    return Placement(
        study_instance_uid=derived_uid(job, "study"),
        patient_id="",
        patient_name="",
        accession_number="",
        image=None,
        from_dicom_sender=False,
    )


def derived_uid(job: Job, role: str, *parts: str) -> str:
    """A UID that is the same for the same job, role and inputs: building a job's report again
    gives the same object, so a PACS that receives it twice keeps one copy; other inputs (another
    study once a return path is gone) give another."""
    return stable_uid(str(job.pk), role, *parts)


def stable_uid(*parts: str) -> str:
    """2.25.<a name-based UUID as an integer> (PS3.5 B.2): derived, not random."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"

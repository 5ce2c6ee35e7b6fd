"""A job's result as FHIR: one DiagnosticReport with its Device and one Observation per label
contained, built and validated with fhir.resources' R4B models.

fhir.resources 8 ships FHIR R5 (its top package), R4B (4.3.0) and STU3, no plain R4. R4B is R4
with a few additions elsewhere: DiagnosticReport, Observation, Device and the data types used here
have the same elements in both, so the JSON below is valid R4 as well (docs/interoperability.md).

    DiagnosticReport  status preliminary (a machine result nobody has verified), category RAD,
                      code LOINC 43468-8, issued = when the result was stored,
                      imagingStudy = the sender's study by its Study Instance UID
                      (identifier urn:dicom:uid / urn:oid:<uid>), subject = the sender's Patient ID
                      and basedOn = its Accession Number (DICOM-sourced jobs only),
                      result -> 18 Observations, conclusion: the labels above the operating point
      contained Device       the algorithm: model name, version, weights (untrained said so)
      contained Observation  code = the label (findings.finding_code), valueQuantity = probability
                             (UCUM {probability}), interpretation POS / NEG (IND: no operating
                             point), referenceRange: the operating point, device -> the Device

A job that ended without a result is a DiagnosticReport with status cancelled and no results
(webhooks of the fhir format send it for failed and cancelled jobs).
"""

from __future__ import annotations

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from backend.dicomnet.returnpath import ReturnPathInfo
from backend.interop import findings
from backend.interop.findings import Report
from backend.jobs.models import Job

SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    findings.PRIVATE_SCHEME: "urn:cxrq:finding",
}
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_CODE = {
    "coding": [{"system": LOINC, "code": "43468-8", "display": "XR unspecified body region"}],
    "text": "Chest X-ray AI findings",
}
CATEGORY = [
    {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
        ]
    }
]
OBSERVATION_CATEGORY = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "imaging",
                "display": "Imaging",
            }
        ]
    }
]
ACCESSION_TYPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}
    ]
}
_INTERPRETATIONS = {
    True: ("POS", "Positive"),
    False: ("NEG", "Negative"),
    None: ("IND", "Indeterminate"),
}


def _job_identifier(job: Job) -> dict:
    return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{job.pk}"}


def _device(report: Report) -> dict:
    algo = report.algorithm
    versions = [
        {"type": {"text": "model version"}, "value": algo.version},
        {"type": {"text": "weights"}, "value": algo.weights},
        {"type": {"text": "weights sha256"}, "value": algo.weights_sha256},
        {"type": {"text": "preprocessing"}, "value": algo.preprocessing},
        {"type": {"text": "precision"}, "value": algo.precision},
    ]
    device = {
        "resourceType": "Device",
        "id": "algorithm",
        "manufacturer": "cxrq",
        "deviceName": [{"name": algo.name, "type": "model-name"}],
        "version": versions,
    }
    if algo.untrained:
        device["note"] = [{"text": "Untrained weights (the development fallback): not for diagnosis."}]
    return device


def _observation(index: int, finding: findings.Finding, report: Report, subject: dict | None) -> dict:
    value, scheme, meaning = finding.code
    code, display = _INTERPRETATIONS[finding.positive]
    observation = {
        "resourceType": "Observation",
        "id": f"finding-{index}",
        "status": "preliminary",
        "category": OBSERVATION_CATEGORY,
        "code": {
            "coding": [{"system": SYSTEMS[scheme], "code": value, "display": meaning}],
            "text": finding.name,
        },
        "issued": report.completed_at.isoformat(),
        "valueQuantity": {
            "value": finding.probability,
            "unit": "probability",
            "system": UCUM,
            "code": "{probability}",
        },
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}],
        "device": {"reference": "#algorithm"},
    }
    if finding.operating_point is not None:
        observation["referenceRange"] = [
            {
                "high": {"value": findings.OPERATING_POINT, "system": UCUM, "code": "{probability}"},
                "text": f"Positive at or above the model's operating point ({findings.OPERATING_POINT} after "
                f"torchxrayvision's op_norm; raw sigmoid threshold {finding.operating_point:.6g})",
            }
        ]
    if subject is not None:
        observation["subject"] = subject
    return observation


def _conclusion(report: Report) -> str:
    positive = [f.name for f in report.findings if f.positive]
    text = (
        "Above the model's operating point: " + ", ".join(positive) + "."
        if positive
        else "No finding above the model's operating point."
    )
    if report.algorithm.untrained:
        text += " Untrained model weights: not for diagnosis."
    return text


def _placement_fields(return_path: ReturnPathInfo | None) -> tuple[dict, dict | None]:
    """The sender's study, patient and order (DICOM-sourced jobs only): the PHI the report needs."""
    if return_path is None:
        return {}, None
    fields: dict = {
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {
                    "system": "urn:dicom:uid",
                    "value": f"urn:oid:{return_path.study_instance_uid}",
                },
            }
        ]
    }
    subject = None
    if return_path.patient_id:
        subject = {"type": "Patient", "identifier": {"value": return_path.patient_id}}
        fields["subject"] = subject
    if return_path.accession_number:
        fields["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {"type": ACCESSION_TYPE, "value": return_path.accession_number},
            }
        ]
    return fields, subject


def build_diagnostic_report(*, job: Job, return_path: ReturnPathInfo | None) -> DiagnosticReport:
    """The job's DiagnosticReport, validated (JobNotSucceeded / JobDeleted when it has no result)."""
    report = findings.report_for(job)
    placement, subject = _placement_fields(return_path)
    observations = [_observation(i, f, report, subject) for i, f in enumerate(report.findings, start=1)]
    body = {
        "resourceType": "DiagnosticReport",
        "id": str(job.pk),
        "identifier": [_job_identifier(job)],
        "status": "preliminary",
        "category": CATEGORY,
        "code": REPORT_CODE,
        "issued": report.completed_at.isoformat(),
        "contained": [_device(report), *observations],
        "result": [{"reference": f"#{o['id']}", "display": o["code"]["text"]} for o in observations],
        "conclusion": _conclusion(report),
        **placement,
    }
    return DiagnosticReport.model_validate(body)


def build_unavailable_report(*, job: Job) -> DiagnosticReport:
    """A job that ended without a result (failed, cancelled, deleted): status cancelled, no results."""
    body = {
        "resourceType": "DiagnosticReport",
        "id": str(job.pk),
        "identifier": [_job_identifier(job)],
        "status": "cancelled",
        "category": CATEGORY,
        "code": REPORT_CODE,
        "conclusion": f"No result: the job ended {job.status.lower()}"
        + (f" ({job.error_code})." if job.error_code else "."),
    }
    if job.finished_at:
        body["issued"] = job.finished_at.isoformat()
    return DiagnosticReport.model_validate(body)


def to_json(resource: DiagnosticReport) -> bytes:
    """Compact FHIR JSON (no empty elements)."""
    return resource.model_dump_json(exclude_none=True).encode()

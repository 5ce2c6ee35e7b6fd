"""The OpenAPI parts of the report endpoints (api.py): binary DICOM and FHIR JSON answers, and the
errors in the one JSON shape (the jobs API's helpers, backend/jobs/schema.py)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from backend.jobs.schema import AUTH_ERRORS, EDGE_ERRORS
from backend.jobs.schema import _error as error

DICOM_MEDIA_TYPE = "application/dicom"
FHIR_MEDIA_TYPE = "application/fhir+json"

_REPORT_ERRORS = {
    404: error(
        "No such job for this client (another client's id is answered the same way).", "job_not_found"
    ),
    409: error(
        "The job has no result yet, or ended without one (queued, in progress, failed, cancelled): "
        "`details.status` says which.",
        "job_not_succeeded",
    ),
    410: error("The job was deleted (by its client or by retention): its result is gone.", "job_deleted"),
    **AUTH_ERRORS,
    429: error(
        "Past this client's rate, or this client already has CXRQ_REPORT_CLIENT_CONCURRENCY report "
        "requests in progress; `Retry-After` says when to come back.",
        "rate_limited",
        "too_many_report_requests",
    ),
    **EDGE_ERRORS,
    304: OpenApiResponse(description="Unchanged since the ETag sent in If-None-Match (or `*`)."),
}
_CONDITIONAL = [
    OpenApiParameter(
        "If-None-Match",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="An ETag from an earlier answer (weak `W/` tags match too), or `*`.",
    )
]

SR = {
    "operation_id": "jobs_sr_retrieve",
    "summary": "A succeeded job's result as a DICOM Comprehensive SR (TID 1500, IHE AI Results)",
    "description": "A DICOM Part 10 file: an Imaging Measurement Report with one measurement group per "
    "pathology (its probability, the operating point, Present/Absent), the algorithm (name, version, "
    "weights), and a reference to the analysed image. A job received over DICOM gets its SR in the "
    "sender's study (Patient ID, Patient's Name, Study Instance UID, Accession Number); an HTTP upload "
    "in a study of its own with no patient identity. Building it again gives the same series and "
    "instance UIDs. docs/interoperability.md describes the content.",
    "request": None,
    "parameters": _CONDITIONAL,
    "responses": {
        (200, DICOM_MEDIA_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="The SR (Part 10)."),
        **_REPORT_ERRORS,
    },
}

_CODING = {
    "type": "object",
    "properties": {
        "system": {"type": "string"},
        "code": {"type": "string"},
        "display": {"type": "string"},
    },
}
_FHIR_REPORT = {
    "type": "object",
    "description": "A FHIR R4 DiagnosticReport (validated with fhir.resources' R4B models), its Device and "
    "18 Observations contained.",
    "properties": {
        "resourceType": {"type": "string", "enum": ["DiagnosticReport"]},
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["preliminary", "final", "cancelled"]},
        "code": {"type": "object", "properties": {"coding": {"type": "array", "items": _CODING}}},
        "issued": {"type": "string"},
        "imagingStudy": {"type": "array", "items": {"type": "object"}},
        "contained": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
                "required": ["resourceType"],
            },
        },
        "result": {
            "type": "array",
            "items": {"type": "object", "properties": {"reference": {"type": "string"}}},
        },
        "conclusion": {"type": "string"},
    },
    "required": ["resourceType", "status", "code"],
}
_FHIR_EXAMPLE = {
    "resourceType": "DiagnosticReport",
    "id": "6f1c2a8e-0d5b-4b7e-9a51-0f3c8a3f2b10",
    "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:6f1c2a8e-0d5b-4b7e-9a51-0f3c8a3f2b10"}],
    "status": "preliminary",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "43468-8", "display": "XR unspecified body region"}]
    },
    "issued": "2026-12-03T08:29:52.347000+00:00",
    "imagingStudy": [
        {
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"},
        }
    ],
    "contained": [
        {
            "resourceType": "Device",
            "id": "algorithm",
            "manufacturer": "cxrq",
            "deviceName": [{"name": "densenet121-res224-all", "type": "model-name"}],
            "version": [{"type": {"text": "weights"}, "value": "untrained"}],
        },
        {
            "resourceType": "Observation",
            "id": "finding-4",
            "status": "preliminary",
            "code": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "36118008", "display": "Pneumothorax"}
                ]
            },
            "valueQuantity": {
                "value": 0.71,
                "unit": "probability",
                "system": "http://unitsofmeasure.org",
                "code": "{probability}",
            },
            "interpretation": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": "POS",
                        }
                    ]
                }
            ],
            "device": {"reference": "#algorithm"},
        },
    ],
    "result": [{"reference": "#finding-4", "display": "Pneumothorax"}],
    "conclusion": "Above the model's operating point: Pneumothorax. Untrained model weights: not for diagnosis.",
}

FHIR = {
    "operation_id": "jobs_fhir_retrieve",
    "summary": "A succeeded job's result as a FHIR R4 DiagnosticReport",
    "description": "One DiagnosticReport with the algorithm (Device) and one Observation per pathology "
    "contained: the probability as valueQuantity, the interpretation from the model's operating point "
    "(POS/NEG). A job received over DICOM references its ImagingStudy by Study Instance UID "
    "(identifier `urn:oid:`), its patient by Patient ID and its order by Accession Number. "
    "docs/interoperability.md describes the content.",
    "request": None,
    "parameters": _CONDITIONAL,
    "responses": {
        (200, FHIR_MEDIA_TYPE): OpenApiResponse(
            _FHIR_REPORT,
            description="The report (18 Observations in a real one; the example shows one).",
            examples=[OpenApiExample("succeeded", value=_FHIR_EXAMPLE, response_only=True)],
        ),
        **_REPORT_ERRORS,
    },
}

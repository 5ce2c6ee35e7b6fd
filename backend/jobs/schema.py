"""The OpenAPI contract's parts that the code cannot say by itself: the key scheme, the one error
shape with its codes per status, the upload's multipart body, and an example per response.

The views (api.py, health.py) carry `extend_schema(**UPLOAD)` and the like; this module holds
what they point to, so that the views stay thin.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from backend.jobs.model_identity import LABELS
from backend.jobs.models import JobStatus
from backend.jobs.serializers import BatchSerializer, JobDetailSerializer, JobOutputSerializer

# A job's status as the API spells it (lower case); named once for the schema's enum.
JOB_STATUSES = [s.value.lower() for s in JobStatus]


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "backend.clients.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` or `Bearer <key>`; keys come from `manage.py create_client` "
            "or `client_keys add` and are shown once.",
        }


class ErrorBody(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable: what went wrong (see the list per status).")
    message = serializers.CharField(help_text="For people.")
    details = serializers.DictField(help_text="Facts about this refusal (limits, sizes, ids).")


class Error(serializers.Serializer):
    error = ErrorBody()


class JobCreated(JobOutputSerializer):
    deduplicated = serializers.BooleanField(
        help_text="True when answered from the cache (the same bytes and model), or from the "
        "organisation's shared cache: no new inference."
    )


class JobDetail(JobDetailSerializer):
    queue = inline_serializer(
        "QueueStanding",
        {
            "jobs_ahead": serializers.IntegerField(help_text="Jobs the claim order puts before this one."),
            "workers": serializers.IntegerField(help_text="Live workers serving this job's model version."),
            "images_per_second": serializers.FloatField(
                allow_null=True,
                help_text="The sum of those workers' measured throughput (their heartbeats); null: none live.",
            ),
            "eta_seconds": serializers.FloatField(
                allow_null=True,
                help_text="(jobs_ahead + 1) / images_per_second; null while no worker is live.",
            ),
            "state": serializers.ChoiceField(
                choices=["waiting", "no_worker"],
                help_text="no_worker: no live worker serves this model, so no estimate can be given.",
            ),
            "finished_per_second": serializers.FloatField(
                help_text="Kept for compatibility: jobs of this model finished in the last 5 minutes, per second."
            ),
        },
        allow_null=True,
        help_text="While queued: its place and an estimate; null otherwise.",
    )


def _error(description: str, *codes: str) -> OpenApiResponse:
    listed = ", ".join(f"`{c}`" for c in codes)
    return OpenApiResponse(
        response=Error,
        description=f"{description} Codes: {listed}.",
        examples=[
            OpenApiExample(
                codes[0],
                value={"error": {"code": codes[0], "message": "…", "details": {}}},
                response_only=True,
            )
        ],
    )


AUTH_ERRORS = {
    401: _error(
        "No key, or a malformed, unknown, revoked or expired one.", "not_authenticated", "invalid_api_key"
    ),
    403: _error("The key's scope does not allow this.", "insufficient_scope"),
    429: _error("Past this client's rate; `Retry-After` says when to come back.", "rate_limited"),
}
EDGE_ERRORS = {
    408: _error("The request head or body did not arrive in time; the connection closes.", "request_timeout"),
    503: _error(
        "Retry shortly (`Retry-After`).", "database_unavailable", "queue_full", "request_took_too_long"
    ),
}

_SUCCEEDED = {
    "id": "6f1c2a8e-0d5b-4b7e-9a51-0f3c8a3f2b10",
    "status": "succeeded",
    "priority": "routine",
    "sha256": "c8cbe59e6b9b186060dc68e63965658fa6b5b3ada6648d25c189b8b69b43cd4c",
    "model_version": "densenet121-res224-all@untrained-fb1+pp3",
    "url": "https://cxrq.hospital.example/api/v1/jobs/6f1c2a8e-0d5b-4b7e-9a51-0f3c8a3f2b10",
    "original_filename": "",
    "image_format": "PNG",
    "size_bytes": 182547,
    "acquisition": {},
    "modality": None,
    "body_part": None,
    "view": None,
    "reference": "ACC-2026-0042",
    "created_at": "2026-12-03T08:29:52.020Z",
    "started_at": "2026-12-03T08:29:52.067Z",
    "finished_at": "2026-12-03T08:29:52.347Z",
    "attempts": 1,
    "cancel_requested_at": None,
    "image_deleted_at": None,
    "deleted_at": None,
    "callback_url": "https://ris.hospital.example/cxrq/hooks",
    "error": None,
    "result": {
        "probabilities": dict.fromkeys(LABELS, 0.5),
        "provenance": {
            "model": "densenet121-res224-all",
            "model_version": "densenet121-res224-all@untrained-fb1+pp3",
            "weights": "untrained",
            "preprocessing": "pp3",
            "precision": "fp32",
        },
        "timings": {"preprocess_ms": 12.1, "inference_ms": 58.1, "postprocess_ms": 0.02, "batch_size": 1},
    },
}
_QUEUED = _SUCCEEDED | {
    "status": "queued",
    "started_at": None,
    "finished_at": None,
    "attempts": 0,
    "result": None,
}

REFERENCE_FIELD = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": "Your own reference for the job (accession, order or correlation id): 1-64 letters, "
    "digits, spaces and `. _ - : / #`, no leading or trailing space; otherwise 400 `invalid_reference`. "
    "Sealed at rest, never logged, shown only to you; not unique. No patient names; an MRN only if you "
    "accept it is stored sealed and shown back to you. Sending bytes you sent before returns the same job, "
    "which takes this reference only if it had none. A DICOM upload without one takes its Accession "
    "Number (the client's `reference_from_dicom`). An empty field: no reference.",
}

CALLBACK_URL_FIELD = {
    "type": "string",
    "format": "uri",
    "maxLength": 2048,
    "description": "Where the job's end is POSTed (a signed webhook: docs/api.md#webhooks). Its host must "
    "be on the client's allow-list (loopback is free in development); https in production.",
}
CALLBACK_ERRORS = ("invalid_callback_url", "callback_url_not_allowed", "callback_url_https_required")

# A nuclear-medicine image in a Secondary Capture wrapper, as a PACS may route one.
_NOT_CHEST_XRAY = {
    "error": {
        "code": "not_chest_xray",
        "message": "Modality NM is not a chest radiograph (accepted: CR, DX, OT, SC).",
        "details": {
            "reason": "modality_not_accepted",
            "attribute": "Modality",
            "modality": "NM",
            "body_part": "other",
            "view": None,
            "sop_class": "Secondary Capture Image Storage",
            "accepted": {
                "modalities": ["CR", "DX"],
                "capture_modalities": ["OT", "SC"],
                "capture_requires_body_part": False,
                "body_parts": ["CHEST"],
                "views": ["AP", "PA"],
                "require": [],
            },
        },
    }
}

UPLOAD = {
    "operation_id": "jobs_create",
    "summary": "Upload a chest X-ray (PNG, JPEG or DICOM): a job, or the cached result",
    "request": {
        "multipart/form-data": {
            "type": "object",
            "properties": {
                "image": {"type": "string", "format": "binary", "description": "One image."},
                "priority": {
                    "type": "string",
                    "enum": ["stat", "routine"],
                    "default": "routine",
                    "description": "stat: claimed before routine work (fair share between clients "
                    "holds within each); a routine job waiting over CXRQ_PRIORITY_PROMOTION_SECONDS "
                    "(300) counts as stat.",
                },
                "callback_url": CALLBACK_URL_FIELD,
                "reference": REFERENCE_FIELD,
            },
            "required": ["image"],
        }
    },
    "parameters": [
        OpenApiParameter(
            "Idempotency-Key",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            description="Replays with the same key and bytes return the first answer; other bytes: 409.",
        )
    ],
    "responses": {
        202: OpenApiResponse(
            JobCreated,
            description="Accepted: queued for inference (`Location` is the job).",
            examples=[OpenApiExample("queued", value=_QUEUED | {"deduplicated": False}, response_only=True)],
        ),
        200: OpenApiResponse(
            JobCreated,
            description="Already analysed: the cached result, no inference.",
            examples=[
                OpenApiExample("cached", value=_SUCCEEDED | {"deduplicated": True}, response_only=True)
            ],
        ),
        400: _error(
            "The upload is not one valid image.",
            "missing_image",
            "multiple_images",
            "ambiguous_upload",
            "empty_file",
            "invalid_image",
            "image_too_small",
            "trailing_data",
            "invalid_idempotency_key",
            "invalid_priority",
            "invalid_reference",
            *CALLBACK_ERRORS,
            "invalid_content_length",
            "too_many_files",
            "too_many_fields",
        ),
        409: _error(
            "The Idempotency-Key came before with other bytes, or is busy.", "idempotency_key_reused"
        ),
        413: _error(
            "Too large, in bytes or pixels.",
            "file_too_large",
            "image_too_many_pixels",
            "dicom_header_too_large",
            "dicom_inflated_too_large",
        ),
        415: _error(
            "Not an accepted format (recognised from the bytes).",
            "unsupported_media_type",
            "ambiguous_format",
        ),
        422: OpenApiResponse(
            response=Error,
            description="Not a chest X-ray this client accepts (Modality, BodyPartExamined, ViewPosition: "
            "`details.reason` says which), or a DICOM object cxrq cannot analyse. Codes: `not_chest_xray`, "
            "`dicom_no_pixel_data`, `dicom_multiframe`, `dicom_color`, `dicom_unsupported_pixels`, "
            "`dicom_burned_in_annotation`.",
            examples=[OpenApiExample("not_chest_xray", value=_NOT_CHEST_XRAY, response_only=True)],
        ),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

LIST = {
    "operation_id": "jobs_list",
    "summary": "The caller's jobs, newest first",
    "parameters": [
        OpenApiParameter("status", OpenApiTypes.STR, enum=JOB_STATUSES, description="Only these."),
        OpenApiParameter(
            "reference",
            OpenApiTypes.STR,
            description="Only the jobs with exactly this reference (matched by a keyed hash; a malformed "
            "one is 400 `invalid_reference`).",
        ),
        OpenApiParameter("page", OpenApiTypes.INT, description="From 1; `last` for the last page."),
        OpenApiParameter("page_size", OpenApiTypes.INT, description="Up to 500; 50 by default."),
    ],
    "responses": {
        200: OpenApiResponse(
            inline_serializer(
                "JobPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": JobOutputSerializer(many=True),
                },
            ),
            examples=[
                OpenApiExample(
                    "a page",
                    value={"count": 1, "next": None, "previous": None, "results": [_SUCCEEDED]},
                    response_only=True,
                )
            ],
        ),
        400: _error(
            "Unknown filter, or a page or page_size that is not a whole number from 1.",
            "invalid_filter",
            "invalid_page",
            "invalid_reference",
        ),
        404: _error("No such page (past the last).", "not_found"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

_DELIVERY = {
    "id": "0b8d2c1e-7f3a-4c55-9e0d-2a6b1f4c9d21",
    "event": "job.succeeded",
    "url": "https://ris.hospital.example/cxrq/hooks",
    "status": "delivered",
    "created_at": "2026-12-03T08:29:52.350Z",
    "next_attempt_at": None,
    "finished_at": "2026-12-03T08:29:57.612Z",
    "attempts": [
        {
            "number": 1,
            "started_at": "2026-12-03T08:29:52.401Z",
            "duration_ms": 31.2,
            "response_code": 503,
            "error": "http_503",
        },
        {
            "number": 2,
            "started_at": "2026-12-03T08:29:57.580Z",
            "duration_ms": 28.7,
            "response_code": 200,
            "error": "",
        },
    ],
}

_PACS_DELIVERY = {
    "id": "5c1e8f0a-2b7d-4e93-8a61-0f4d2c9b7e15",
    "destination": "hospital-pacs",
    "status": "delivered",
    "created_at": "2026-12-03T08:29:52.350Z",
    "next_attempt_at": None,
    "finished_at": "2026-12-03T08:30:02.744Z",
    "attempts": [
        {
            "number": 1,
            "started_at": "2026-12-03T08:29:52.402Z",
            "duration_ms": 3004.1,
            "dimse_status": None,
            "error": "connect_error: no connection to 10.20.0.7:4242",
            "sent": 0,
        },
        {
            "number": 2,
            "started_at": "2026-12-03T08:30:02.611Z",
            "duration_ms": 131.9,
            "dimse_status": 0,
            "error": "",
            "sent": 1,
        },
    ],
}

DETAIL = {
    "operation_id": "jobs_retrieve",
    "summary": "One of the caller's jobs; `?wait=N` waits for it to end",
    "description": "With `wait` (seconds, up to CXRQ_LONG_POLL_MAX_SECONDS, 30), the answer comes as soon "
    "as the job has ended, or when the wait runs out (the job as it stands). With `If-None-Match` "
    "(the job's `ETag`), an unchanged job is 304; with both, the answer comes when the job changes. "
    "A waiting client holds no server thread.",
    "parameters": [
        OpenApiParameter("wait", OpenApiTypes.INT, description="Seconds to wait for the job to end (0-30)."),
        OpenApiParameter(
            "If-None-Match",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            description="An ETag from an earlier answer.",
        ),
    ],
    "responses": {
        200: OpenApiResponse(
            JobDetail,
            examples=[
                OpenApiExample(
                    "succeeded",
                    value=_SUCCEEDED | {"queue": None, "webhooks": [_DELIVERY], "pacs": [_PACS_DELIVERY]},
                    response_only=True,
                ),
                OpenApiExample(
                    "queued",
                    value=_QUEUED
                    | {
                        "queue": {
                            "jobs_ahead": 12,
                            "workers": 1,
                            "images_per_second": 41.5,
                            "eta_seconds": 0.3,
                            "state": "waiting",
                            "finished_per_second": 4.2,
                        },
                        "webhooks": [],
                        "pacs": [],
                    },
                    response_only=True,
                ),
            ],
        ),
        304: OpenApiResponse(description="Unchanged since the ETag sent in If-None-Match."),
        400: _error("`wait` is not a whole number of seconds up to the maximum.", "invalid_wait"),
        404: _error(
            "No such job for this client (another client's id is answered the same way).", "job_not_found"
        ),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

_HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["ok", "degraded"]),
        "reasons": serializers.ListField(child=serializers.CharField()),
        "database": serializers.DictField(required=False),
        "broker": serializers.DictField(required=False),
        "workers": serializers.DictField(required=False),
        "model_version": serializers.CharField(required=False),
        "limits": serializers.DictField(required=False),
    },
)

HEALTH = {
    "operation_id": "health",
    "summary": "Can the API serve? Status and reasons for anyone; the figures for operators",
    "auth": [{"ApiKey": []}, {}],
    "parameters": [OpenApiParameter("strict", OpenApiTypes.BOOL, description="503 on any degradation.")],
    "responses": {
        200: OpenApiResponse(
            _HEALTH,
            description="Operators (an `operator` key or a staff session) also get database, broker, "
            "workers, model_version and limits.",
            examples=[OpenApiExample("ok", value={"status": "ok", "reasons": []}, response_only=True)],
        ),
        503: OpenApiResponse(
            _HEALTH,
            description="The database is down (or, with `strict`, anything is degraded).",
            examples=[
                OpenApiExample(
                    "down",
                    value={"status": "degraded", "reasons": ["database_unavailable"]},
                    response_only=True,
                )
            ],
        ),
    },
}

_CANCELLED = _QUEUED | {
    "status": "cancelled",
    "finished_at": "2026-12-03T08:29:53.000Z",
    "error": {"code": "cancelled", "message": "Cancelled by the client before it ran."},
}

CANCEL = {
    "operation_id": "jobs_cancel",
    "summary": "Cancel one of the caller's jobs",
    "description": "A queued job ends `cancelled` at once and is never inferred. An in-progress job "
    "is marked (`cancel_requested_at`) and ends `cancelled` when its batch returns; its result is "
    "not stored. A cancelled job does not answer for its bytes: they may be uploaded again. "
    "Cancelling again is harmless.",
    "request": None,
    "responses": {
        200: OpenApiResponse(
            JobOutputSerializer,
            examples=[
                OpenApiExample("cancelled", value=_CANCELLED, response_only=True),
                OpenApiExample(
                    "cancel requested",
                    value=_QUEUED
                    | {"status": "in_progress", "cancel_requested_at": "2026-12-03T08:29:53.000Z"},
                    response_only=True,
                ),
            ],
        ),
        404: _error("No such job for this client.", "job_not_found"),
        409: _error("The job has already ended (succeeded or failed).", "job_not_cancellable"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

_DELETED = _SUCCEEDED | {
    "status": "deleted",
    "deleted_at": "2026-12-04T10:00:00.000Z",
    "image_deleted_at": "2026-12-04T10:00:00.000Z",
    "acquisition": {},
    "result": None,
}

DELETE = {
    "operation_id": "jobs_delete",
    "summary": "Delete one of the caller's jobs: its image and result, now",
    "description": "The job stays as a tombstone (`deleted`, `deleted_at`): its image, result, "
    "acquisition facts and file name are gone, its webhook payloads too, and its Idempotency-Keys are "
    "freed. The same bytes may be uploaded again (analysed afresh). A queued job is deleted before it "
    "runs; one being analysed is refused (409: cancel it, then delete it). Deleting again is harmless.",
    "request": None,
    "responses": {
        200: OpenApiResponse(
            JobOutputSerializer, examples=[OpenApiExample("deleted", value=_DELETED, response_only=True)]
        ),
        404: _error("No such job for this client.", "job_not_found"),
        409: _error("The job is being analysed now.", "job_in_progress"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

_BATCH = {
    "id": "3a1d9c2b-5e7f-4a60-8b21-7c4e0f9d1a33",
    "url": "https://cxrq.hospital.example/api/v1/batches/3a1d9c2b-5e7f-4a60-8b21-7c4e0f9d1a33",
    "created_at": "2026-12-03T08:29:52.020Z",
    "priority": "routine",
    "callback_url": "",
    "done": False,
    "counts": {
        "queued": 1,
        "in_progress": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "deleted": 0,
        "rejected": 1,
        "total": 3,
    },
    "items": [
        {"index": 0, "filename": "", "deduplicated": False, "job": _QUEUED, "error": None},
        {"index": 1, "filename": "", "deduplicated": True, "job": _SUCCEEDED, "error": None},
        {
            "index": 2,
            "filename": "",
            "job": None,
            "error": {"status": 400, "code": "invalid_image", "message": "…", "details": {}},
        },
    ],
}

BATCH_CREATE = {
    "operation_id": "batches_create",
    "summary": "Upload several images at once: one job per image, each with its own outcome",
    "description": "Multipart with the field `images` once per image (up to CXRQ_BATCH_MAX_IMAGES, 64). "
    "Each image is an upload of its own: validated, deduplicated and queued as `POST /jobs` would, or "
    "refused with its own error in its item; valid images become jobs whatever happens to the others. "
    "Each image counts against the upload rate, all or nothing: a batch that does not fit now is 429 "
    "with `Retry-After` (nothing charged), one with more images than the rate allows in a whole period "
    "is 400 `too_many_images`. Sending the same batch again makes no second job for "
    "any image (each dedups on its bytes).",
    "request": {
        "multipart/form-data": {
            "type": "object",
            "properties": {
                "images": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": "The images, the field repeated once per image.",
                },
                "priority": UPLOAD["request"]["multipart/form-data"]["properties"]["priority"],
                "callback_url": CALLBACK_URL_FIELD | {"description": "Each job's end is POSTed here."},
                "reference": {
                    "type": "array",
                    "items": REFERENCE_FIELD,
                    "description": "One reference per image, in the images' order (the field repeated; "
                    "an empty one: none for that image), or none at all; another count is 400 "
                    "`invalid_reference`.",
                },
            },
            "required": ["images"],
        }
    },
    "responses": {
        201: OpenApiResponse(
            BatchSerializer,
            description="The batch (`Location`), each image's job or error in the order sent.",
            examples=[OpenApiExample("mixed", value=_BATCH, response_only=True)],
        ),
        400: _error(
            "Nothing to analyse, too many images, or a field that applies to all of them is wrong.",
            "missing_images",
            "too_many_images",
            "invalid_priority",
            "invalid_reference",
            *CALLBACK_ERRORS,
            "invalid_content_length",
            "too_many_files",
            "too_many_fields",
        ),
        413: _error("The whole body is larger than CXRQ_BATCH_MAX_BYTES.", "file_too_large"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

BATCH_DETAIL = {
    "operation_id": "batches_retrieve",
    "summary": "One of the caller's batches; `?wait=N` waits for all its jobs to end",
    "description": "Each image's job as it stands (with its result when succeeded) or its error, and the "
    "counts by outcome. `wait` and `If-None-Match` work as for one job: the answer comes when every "
    "job has ended (`done`), when something changed, or when the wait runs out.",
    "parameters": DETAIL["parameters"],
    "responses": {
        200: OpenApiResponse(
            BatchSerializer,
            examples=[
                OpenApiExample(
                    "done",
                    value=_BATCH
                    | {
                        "done": True,
                        "counts": _BATCH["counts"] | {"queued": 0, "succeeded": 2},
                        "items": [
                            _BATCH["items"][0] | {"job": _SUCCEEDED},
                            *_BATCH["items"][1:],
                        ],
                    },
                    response_only=True,
                )
            ],
        ),
        304: OpenApiResponse(description="Unchanged since the ETag sent in If-None-Match."),
        400: _error("`wait` is not a whole number of seconds up to the maximum.", "invalid_wait"),
        404: _error("No such batch for this client.", "batch_not_found"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

_CSV_EXAMPLE = (
    "job_id,reference,finding,probability,operating_point,scale,positive,model_version,weights\r\n"
    "6f1c2a8e-0d5b-4b7e-9a51-0f3c8a3f2b10,ACC-2026-0042,Atelectasis,0.01732971,0.07422872,raw,false,"
    "densenet121-res224-all@untrained-fb1+pp3,untrained\r\n"
)

RESULT_CSV = {
    "operation_id": "jobs_result_csv",
    "summary": "A succeeded job's result as CSV: the same file the web client and the CLI give",
    "description": "Columns: `job_id,reference,finding,probability,operating_point,scale,positive,"
    "model_version,weights`, one row per finding in the model's label order. `probability` and "
    "`operating_point` are on the same scale, the model's raw output (`scale` = `raw`); `positive` is "
    "`true`/`false` (empty, with the two numbers, for a label the model has no operating point for); "
    "`weights` is `untrained` for the fallback weights. The JSON's probabilities are unchanged (op_norm "
    "scale, every operating point at 0.5).",
    "request": None,
    "responses": {
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="The CSV (RFC 4180, CRLF).",
            examples=[OpenApiExample("untrained", value=_CSV_EXAMPLE, response_only=True)],
        ),
        404: _error(
            "No such job for this client (another client's id is answered the same way).", "job_not_found"
        ),
        409: _error("The job has no result (not succeeded, or not yet).", "job_not_succeeded"),
        410: _error("The job was deleted: its result is gone.", "job_deleted"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}

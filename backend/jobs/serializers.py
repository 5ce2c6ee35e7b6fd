"""Output shapes. Validation of uploads lives in intake.py, not here."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from backend.jobs.errors import job_error_message
from backend.jobs.models import Job, JobStatus, Priority
from backend.pacs import selectors as pacs_selectors
from backend.pacs.serializers import PacsDeliverySerializer

# What a result tells its client: enough to know which model, weights, preprocessing and
# precision produced it and how long it took. The database keeps the whole record (library
# versions, engine, worker and batch ids) for operators; those are not the client's business
# and would tell an attacker what runs where.
CLIENT_PROVENANCE = (
    "model",
    "model_version",
    "labels",
    "weights",
    "weights_sha256",
    "fallback_weights_sha256",
    "preprocessing",
    "precision",
    "precision_requested",
    "fast_guard",
    "answered_from",
)
CLIENT_TIMINGS = ("preprocess_ms", "inference_ms", "inference_ms_per_image", "postprocess_ms", "batch_size")


def public_url(url: str | None) -> str | None:
    """An absolute URL on CXRQ_PUBLIC_URL when it is set (never the request's Host, which
    the client chooses), else as the request built it (development, tests)."""
    if url is None or not settings.PUBLIC_URL:
        return url
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return settings.PUBLIC_URL + path


def _only(record: dict, keys: tuple[str, ...]) -> dict:
    return {k: record[k] for k in keys if k in record}


class JobOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.SerializerMethodField()
    priority = serializers.SerializerMethodField()
    sha256 = serializers.CharField()
    model_version = serializers.CharField()
    url = serializers.SerializerMethodField()
    original_filename = serializers.CharField()
    image_format = serializers.CharField()
    size_bytes = serializers.IntegerField()
    acquisition = serializers.JSONField()
    modality = serializers.SerializerMethodField()
    body_part = serializers.SerializerMethodField()
    view = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()
    cancel_requested_at = serializers.DateTimeField(
        allow_null=True, help_text="When the client asked to cancel this job while it ran; it ends cancelled."
    )
    image_deleted_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the stored image was deleted (retention or deletion); the result may remain.",
    )
    deleted_at = serializers.DateTimeField(
        allow_null=True, help_text="When the job was deleted: its image and result are gone."
    )
    callback_url = serializers.CharField(
        help_text="Where this job's end is announced (a webhook); empty: none."
    )
    reference = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    @extend_schema_field(
        {
            "type": ["string", "null"],
            "maxLength": 64,
            "description": "The client's own reference for this job (accession, order or correlation "
            "id), as sent, or a DICOM upload's Accession Number by default; sealed at rest, shown "
            "only to this client; null: none.",
        }
    )
    def get_reference(self, job: Job) -> str | None:
        return job.reference

    @extend_schema_field({"type": "string", "enum": [s.value.lower() for s in JobStatus]})
    def get_status(self, job: Job) -> str:
        return job.status.lower()

    @extend_schema_field({"type": "string", "enum": [p.label for p in Priority]})
    def get_priority(self, job: Job) -> str:
        return Priority(job.priority).label

    @extend_schema_field(
        {
            "type": ["string", "null"],
            "description": "The DICOM Modality the image was accepted with (CR, DX, ...); "
            "null when it states none (PNG, JPEG).",
        }
    )
    def get_modality(self, job: Job) -> str | None:
        return (job.acquisition or {}).get("modality")

    @extend_schema_field(
        {
            "type": ["string", "null"],
            "description": "Its Body Part Examined (CHEST; THORAX is read as CHEST); null when it states none.",
        }
    )
    def get_body_part(self, job: Job) -> str | None:
        return (job.acquisition or {}).get("body_part_examined")

    @extend_schema_field(
        {
            "type": ["string", "null"],
            "description": "Its View Position (PA, AP, ...); null when it states none.",
        }
    )
    def get_view(self, job: Job) -> str | None:
        return (job.acquisition or {}).get("view_position")

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, job: Job) -> str:
        request = self.context.get("request")
        return public_url(reverse("jobs:detail", kwargs={"job_id": job.id}, request=request))

    @extend_schema_field(
        {
            "type": ["object", "null"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "description": "Why a failed job failed.",
        }
    )
    def get_error(self, job: Job) -> dict | None:
        if not job.error_code:
            return None
        return {"code": job.error_code, "message": job_error_message(job.error_code, job.error_message)}

    @extend_schema_field(
        {
            "type": ["object", "null"],
            "description": "Present when succeeded: the 18 probabilities in the model's label order, "
            "the provenance a client needs, per-phase timings.",
            "properties": {
                "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
                "provenance": {"type": "object"},
                "timings": {"type": "object"},
            },
        }
    )
    def get_result(self, job: Job) -> dict | None:
        result = getattr(job, "result", None) if job.status == "SUCCEEDED" else None
        if result is None:
            return None
        # jsonb does not keep key order: give them back in the model's label order.
        labels = result.provenance.get("labels") or sorted(result.probabilities)
        probabilities = {k: result.probabilities[k] for k in labels if k in result.probabilities}
        return {
            "probabilities": probabilities,
            "provenance": _only(result.provenance, CLIENT_PROVENANCE),
            "timings": _only(result.timings, CLIENT_TIMINGS),
        }


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    response_code = serializers.IntegerField(
        allow_null=True, help_text="The receiver's HTTP status; null: none."
    )
    error = serializers.CharField(help_text="timeout, connect_error, dns_error, http_500, refused: ...")


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="Sent as the webhook-id header, the same on every attempt.")
    event = serializers.CharField(help_text="job.succeeded, job.failed or job.cancelled")
    url = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "delivered", "gave_up", "refused"])
    created_at = serializers.DateTimeField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = WebhookAttemptSerializer(many=True, source="attempt_log.all")


class JobDetailSerializer(JobOutputSerializer):
    """One job as GET /jobs/{id} shows it: with its webhook and PACS deliveries and their attempts."""

    webhooks = serializers.SerializerMethodField()
    pacs = serializers.SerializerMethodField()

    @extend_schema_field(WebhookDeliverySerializer(many=True))
    def get_webhooks(self, job: Job) -> list[dict]:
        if not job.callback_url:  # no callback, no deliveries: no query either
            return []
        return WebhookDeliverySerializer(job.webhook_deliveries.all(), many=True).data

    @extend_schema_field(PacsDeliverySerializer(many=True))
    def get_pacs(self, job: Job) -> list[dict]:
        """Where its SR went back as DICOM (only a succeeded job that came over DICOM has any)."""
        if job.status not in (JobStatus.SUCCEEDED, JobStatus.DELETED):
            return []
        return PacsDeliverySerializer(pacs_selectors.deliveries_for(job=job), many=True).data


class BatchErrorSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status this image alone would have had.")
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class BatchItemSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Its place in the request, from 0.")
    filename = serializers.CharField(
        help_text="As sent, where CXRQ_STORE_ORIGINAL_FILENAME keeps names; else empty."
    )
    deduplicated = serializers.BooleanField(required=False)
    job = JobOutputSerializer(allow_null=True, help_text="The image's job; null when it was refused.")
    error = BatchErrorSerializer(
        allow_null=True, help_text="Why the image was refused; null when it is a job."
    )


def batch_counts(items: list[dict], jobs: dict[str, Job]) -> dict[str, int]:
    counts = {status.value.lower(): 0 for status in JobStatus} | {"rejected": 0, "total": len(items)}
    for item in items:
        job = jobs.get(item.get("job_id", ""))
        counts[job.status.lower() if job else "rejected"] += 1
    return counts


class BatchSerializer(serializers.Serializer):
    """A batch with each image's outcome; `context["jobs"]` holds its jobs by id (one query)."""

    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    priority = serializers.SerializerMethodField()
    callback_url = serializers.CharField()
    done = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    items = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, batch) -> str:
        return public_url(
            reverse("jobs:batch", kwargs={"batch_id": batch.id}, request=self.context.get("request"))
        )

    @extend_schema_field({"type": "string", "enum": [p.label for p in Priority]})
    def get_priority(self, batch) -> str:
        return Priority(batch.priority).label

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_done(self, batch) -> bool:
        """Every image's job has ended (refused images count as ended)."""
        return all(job.status in JobStatus.ended() for job in self.context["jobs"].values())

    @extend_schema_field(
        {
            "type": "object",
            "description": "Images by outcome: their jobs' statuses, `rejected` (refused at upload), `total`.",
            "additionalProperties": {"type": "integer"},
        }
    )
    def get_counts(self, batch) -> dict[str, int]:
        return batch_counts(batch.items, self.context["jobs"])

    @extend_schema_field(BatchItemSerializer(many=True))
    def get_items(self, batch) -> list[dict]:
        jobs = self.context["jobs"]
        out = []
        for item in batch.items:
            job = jobs.get(item.get("job_id", ""))
            row = {
                "index": item["index"],
                "filename": item.get("filename", ""),
                "job": JobOutputSerializer(job, context=self.context).data if job else None,
                "error": item.get("error"),
            }
            if "deduplicated" in item:
                row["deduplicated"] = item["deduplicated"]
            out.append(row)
        return out

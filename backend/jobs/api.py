"""Thin HTTP views: parse, call a service or selector, serialize."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.audit.actors import actor_from_request
from backend.audit.services import audit_read, audit_write
from backend.core.conditional import if_none_match
from backend.core.pagination import StrictPageNumberPagination
from backend.edge import waiting
from backend.edge.asgi import body_limit
from backend.interop import errors as report_errors
from backend.jobs import csv_export, errors, schema, selectors
from backend.jobs.models import JobStatus
from backend.jobs.serializers import BatchSerializer, JobDetailSerializer, JobOutputSerializer, public_url
from backend.jobs.services import batches, cancellation, deletion, intake
from backend.jobs.throttling import ClientRateThrottle
from backend.metrics.uploads import count_upload
from backend.pacs import selectors as pacs_selectors


def _content_length(request: Request) -> int:
    raw = (request.META.get("CONTENT_LENGTH") or "0").strip()
    if not raw.isdigit() or not raw.isascii():
        raise errors.InvalidContentLength(details={"content_length": raw[:64]})
    return int(raw)


class JobPagination(StrictPageNumberPagination):
    def get_next_link(self) -> str | None:
        return public_url(super().get_next_link())

    def get_previous_link(self) -> str | None:
        return public_url(super().get_previous_link())


class JobCollectionApi(APIView):
    throttle_classes = [ClientRateThrottle]

    @extend_schema(**schema.UPLOAD)
    def post(self, request: Request) -> Response:
        declared = _content_length(request)
        if declared > body_limit():
            # Refuse before Django spools the body to disk (the edge has, when it is in front).
            raise errors.FileTooLarge(details={"max_bytes": settings.UPLOAD_MAX_BYTES, "size": declared})
        uploads = request.FILES.getlist("image")
        if uploads and request.FILES.getlist("images"):
            # Which did the client mean? Taking one and dropping the rest would lose images silently.
            raise errors.AmbiguousUpload(details={"images": len(request.FILES.getlist("images"))})
        if not uploads:
            raise errors.MissingImage()
        if len(uploads) > 1:
            raise errors.MultipleImages(details={"images": len(uploads)})
        upload = uploads[0]
        outcome = intake.job_create(
            client=request.user,
            upload=upload,
            original_filename=upload.name or "",
            content_type=upload.content_type or "",
            idempotency_key=request.headers.get("Idempotency-Key"),
            priority=request.data.get("priority"),
            callback_url=request.data.get("callback_url"),
            reference=_one_reference(request),
        )
        job = outcome.job
        action = "job.deduplicated" if outcome.deduplicated else "job.created"
        audit_write(actor=actor_from_request(request), action=action, job_ids=[job.id])
        count_upload(deduplicated=outcome.deduplicated)
        body = JobOutputSerializer(job, context={"request": request}).data
        body["deduplicated"] = outcome.deduplicated
        code = status.HTTP_200_OK if job.status == JobStatus.SUCCEEDED else status.HTTP_202_ACCEPTED
        return Response(body, status=code, headers={"Location": body["url"]})

    @extend_schema(**schema.LIST)
    def get(self, request: Request) -> Response:
        qs = selectors.job_list(
            client=request.user,
            status=request.query_params.get("status"),
            reference=request.query_params.get("reference"),
        )
        paginator = JobPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = JobOutputSerializer(page, many=True, context={"request": request}).data
        # Never the reference itself in the audit details: only whether the list was filtered by one.
        details = {"status": request.query_params.get("status", ""), "returned": len(data)}
        if "reference" in request.query_params:
            details["by_reference"] = True
        audit_read(actor=actor_from_request(request), action="jobs.listed", details=details)
        return paginator.get_paginated_response(data)


class JobDetailApi(APIView):
    throttle_classes = [ClientRateThrottle]

    @extend_schema(**schema.DETAIL)
    def get(self, request: Request, job_id: str) -> Response:
        wait = _wait_seconds(request)
        job = selectors.job_get(client=request.user, job_id=job_id, with_webhooks=True)
        audit_read(actor=actor_from_request(request), action="job.read", job_id=job.id)
        etag = job_etag(job)
        unchanged = if_none_match(request, etag)
        headers = {"ETag": etag}
        if wait and (unchanged or job.status not in JobStatus.ended()):
            # The edge (backend/edge/waiting.py) keeps this answer back and asks again when the
            # job ends or the wait runs out; the header never reaches the client.
            headers[waiting.WAIT_HEADER] = f"{job.id} {wait}"
        elif unchanged:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        body = JobDetailSerializer(job, context={"request": request}).data
        body["queue"] = selectors.queue_standing(job)
        return Response(body, headers=headers)

    @extend_schema(**schema.DELETE)
    def delete(self, request: Request, job_id: str) -> Response:
        job = deletion.job_delete(client=request.user, job_id=job_id)
        audit_write(actor=actor_from_request(request), action="job.deleted", job_ids=[job.id])
        return Response(JobOutputSerializer(job, context={"request": request}).data)


def _one_reference(request: Request) -> str | None:
    """The `reference` form field of a single upload (400 invalid_reference when sent twice)."""
    if not hasattr(request.data, "getlist"):
        return None
    values = request.data.getlist("reference")
    if len(values) > 1:
        raise errors.InvalidReference(
            "Send one reference for one image.", details={"field": "reference", "references": len(values)}
        )
    return values[0] if values else None


def _wait_seconds(request: Request) -> int:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0
    # isascii: str.isdigit() is also true of '¹' or '٣', which int() refuses (a 500, found by schemathesis).
    if not (raw.isascii() and raw.isdigit()) or int(raw) > settings.LONG_POLL_MAX_SECONDS:
        raise errors.InvalidWait(details={"max_seconds": settings.LONG_POLL_MAX_SECONDS})
    return int(raw)


def job_etag(job) -> str:
    """Changes whenever the job's JSON can: its status, attempts, times, cancel mark, priority,
    callback and its deliveries' progress (prefetched by job_get(with_webhooks=True))."""
    deliveries = (
        [(d.id, d.status, d.attempts) for d in job.webhook_deliveries.all()] if job.callback_url else []
    )
    if job.status in (JobStatus.SUCCEEDED, JobStatus.DELETED):  # the only jobs with PACS deliveries
        deliveries += [(d.id, d.status, d.attempts) for d in pacs_selectors.deliveries_for(job=job)]
    return _etag((job_etag_parts(job), deliveries))


def _etag(parts) -> str:
    return f'"{hashlib.sha256(repr(parts).encode()).hexdigest()[:20]}"'


def job_etag_parts(job) -> tuple:
    return (
        job.status,
        job.attempts,
        job.started_at,
        job.finished_at,
        job.cancel_requested_at,
        job.priority,
        job.callback_url,
        job.deleted_at,
        job.image_deleted_at,
    )


class JobResultCsvApi(APIView):
    """GET /jobs/{id}/result.csv: the result as the one CSV (backend/jobs/csv_export.py)."""

    throttle_classes = [ClientRateThrottle]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # The answer is CSV, not rendered; errors stay JSON whatever Accept asked for.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(**schema.RESULT_CSV)
    def get(self, request: Request, job_id: str) -> HttpResponse:
        job = selectors.job_get(client=request.user, job_id=job_id)
        if job.status == JobStatus.DELETED:
            raise report_errors.JobDeleted(
                details={"deleted_at": job.deleted_at.isoformat() if job.deleted_at else None}
            )
        if job.status != JobStatus.SUCCEEDED or getattr(job, "result", None) is None:
            raise report_errors.JobNotSucceeded(details={"status": job.status.lower()})
        audit_read(actor=actor_from_request(request), action="job.read", job_id=job.id, details={"as": "csv"})
        response = HttpResponse(csv_export.as_csv([job]), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="cxrq-{job.id}.csv"'
        response["Cache-Control"] = "private, no-cache"
        return response


class JobCancelApi(APIView):
    throttle_classes = [ClientRateThrottle]

    @extend_schema(**schema.CANCEL)
    def post(self, request: Request, job_id: str) -> Response:
        job = cancellation.job_cancel(client=request.user, job_id=job_id)
        audit_write(actor=actor_from_request(request), action="job.cancelled", job_ids=[job.id])
        return Response(JobOutputSerializer(job, context={"request": request}).data)


class BatchCollectionApi(APIView):
    throttle_classes = [ClientRateThrottle]

    def request_cost(self, request: Request) -> int:
        """Each image counts against the client's upload rate, as if sent alone."""
        return len(request.FILES.getlist("images")) if request.method == "POST" else 1

    @extend_schema(**schema.BATCH_CREATE)
    def post(self, request: Request) -> Response:
        declared = _content_length(request)
        if declared > body_limit(request.path):
            raise errors.FileTooLarge(details={"max_bytes": settings.BATCH_MAX_BYTES, "size": declared})
        batch = batches.batch_create(
            client=request.user,
            uploads=request.FILES.getlist("images"),
            priority=request.data.get("priority"),
            callback_url=request.data.get("callback_url"),
            reference=request.data.getlist("reference") if hasattr(request.data, "getlist") else None,
        )
        jobs = batches.batch_jobs(batch)
        for item in batch.items:
            if "job_id" in item:
                count_upload(deduplicated=item["deduplicated"])
        audit_write(
            actor=actor_from_request(request),
            action="batch.created",
            job_ids=list(jobs) or [None],
            details={"batch_id": str(batch.id), "images": len(batch.items)},
        )
        body = BatchSerializer(batch, context={"request": request, "jobs": jobs}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class BatchDetailApi(APIView):
    throttle_classes = [ClientRateThrottle]

    @extend_schema(**schema.BATCH_DETAIL)
    def get(self, request: Request, batch_id: str) -> Response:
        wait = _wait_seconds(request)
        batch = batches.batch_get(client=request.user, batch_id=batch_id)
        jobs = batches.batch_jobs(batch)
        audit_read(
            actor=actor_from_request(request), action="batch.read", details={"batch_id": str(batch.id)}
        )
        etag = _etag(sorted((job_id, job_etag_parts(job)) for job_id, job in jobs.items()))
        unchanged = if_none_match(request, etag)
        headers = {"ETag": etag}
        running = [job_id for job_id, job in jobs.items() if job.status not in JobStatus.ended()]
        if wait and (unchanged or running):
            # As for one job (JobDetailApi): the edge waits for any of these jobs to end.
            headers[waiting.WAIT_HEADER] = f"{','.join(running or jobs)} {wait}"
        elif unchanged:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        body = BatchSerializer(batch, context={"request": request, "jobs": jobs}).data
        return Response(body, headers=headers)

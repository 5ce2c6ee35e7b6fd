"""Thin HTTP views: parse, call a service or selector, serialize."""

from __future__ import annotations

import hashlib

from django.conf import settings
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
from backend.jobs import errors, schema, selectors
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
        qs = selectors.job_list(client=request.user, status=request.query_params.get("status"))
        paginator = JobPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = JobOutputSerializer(page, many=True, context={"request": request}).data
        details = {"status": request.query_params.get("status", ""), "returned": len(data)}
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

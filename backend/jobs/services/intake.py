"""Upload -> job: validate, deduplicate, honour Idempotency-Key, refuse when the queue is full.

A cache hit (the same bytes already analysed, or queued, for the same model)
is answered before the image is decoded or the queue depth is looked at. The
job row is committed before its wake-up is sent (dispatch.wake_workers).

Only chest X-rays become jobs: the client's eligibility rules (backend/jobs/eligibility.py)
are checked on every upload, a cache hit included, and an image they refuse is
`422 not_chest_xray`, never a job and never a score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from backend.clients.models import Client
from backend.core.logging import request_id_var
from backend.jobs import eligibility, errors, images, selectors
from backend.jobs import reference as references
from backend.jobs.dispatch import wake_workers
from backend.jobs.model_identity import current_model_version
from backend.jobs.models import IdempotencyKey, Job, JobResult, JobStatus, Priority
from backend.webhooks import services as webhooks
from backend.webhooks import targets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCreateOutcome:
    job: Job
    deduplicated: bool


def job_create(
    *,
    client: Client,
    upload: UploadedFile,
    original_filename: str = "",
    content_type: str = "",
    idempotency_key: str | None = None,
    priority: str | None = None,
    callback_url: str | None = None,
    on_create: Callable[[Job], None] | None = None,
    reference: str | None = None,
) -> JobCreateOutcome:
    """Create the client's job for an upload, or return its live job for the same bytes and model.

    With an Idempotency-Key, a replay returns the job the key first answered
    with, and the key with different bytes is refused (409).
    on_create: called with a new job inside the transaction that inserts it (the DICOM receiver
    keeps its return path there); what it raises refuses the upload and leaves no job.
    reference: the client's own reference (400 invalid_reference when malformed). A new job keeps
    it; a job returned for the same bytes takes it only if it has none. Without one, a DICOM
    upload's Accession Number is taken where the client's reference_from_dicom says so.
    """
    reference = references.check(reference)
    urgency, callback = upload_options(client=client, priority=priority, callback_url=callback_url)
    data = images.read_upload(upload, max_bytes=settings.UPLOAD_MAX_BYTES)
    sha256 = images.sha256_of(data)

    def create() -> JobCreateOutcome:
        return _create_or_dedup(
            client=client,
            data=data,
            sha256=sha256,
            original_filename=original_filename,
            content_type=content_type,
            priority=urgency,
            callback_url=callback,
            on_create=on_create,
            reference=reference,
        )

    if not idempotency_key:
        return create()
    key_job, first_use = _claim_idempotency_key(client=client, key=idempotency_key, sha256=sha256)
    if key_job is not None:
        return JobCreateOutcome(job=key_job, deduplicated=True)
    if not first_use:
        # The first request with this key is still in flight: these are the same bytes, so
        # dedup returns its job. The key stays the first request's to bind or to free.
        return create()
    try:
        outcome = create()
    except BaseException:
        # Nothing was accepted under this key: free it so the client can retry.
        IdempotencyKey.objects.filter(client=client, key=idempotency_key, job__isnull=True).delete()
        raise
    IdempotencyKey.objects.filter(client=client, key=idempotency_key, job__isnull=True).update(
        job=outcome.job
    )
    return outcome


def upload_options(*, client: Client, priority: str | None, callback_url: str | None) -> tuple[Priority, str]:
    """The priority and callback_url form fields, checked (400 with a code when wrong)."""
    try:
        urgency = Priority.parse(priority)
    except ValueError:
        raise errors.InvalidPriority(details={"priority": str(priority)[:32]}) from None
    callback = ""
    if callback_url:
        callback = targets.check_callback_url(callback_url, allowed_hosts=client.webhook_allowed_hosts)
    return urgency, callback


def _claim_idempotency_key(*, client: Client, key: str, sha256: str) -> tuple[Job | None, bool]:
    """Record the key for these bytes: (None, True) for a first use, else (the key's job or
    None while the first request is in flight, False)."""
    if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise errors.InvalidIdempotencyKey()
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(client=client, key=key, request_sha256=sha256)
        return None, True
    except IntegrityError:
        existing = IdempotencyKey.objects.select_related("job__result").filter(client=client, key=key).first()
    if existing is None:
        # The first request failed and freed the key between our insert and this read.
        raise errors.IdempotencyKeyBusy(retry_after=1)
    if existing.request_sha256 != sha256:
        raise errors.IdempotencyKeyReused(details={"idempotency_key": key})
    return existing.job, False


def _create_or_dedup(
    *,
    client: Client,
    data: bytes,
    sha256: str,
    original_filename: str,
    content_type: str,
    priority: Priority = Priority.ROUTINE,
    callback_url: str = "",
    on_create: Callable[[Job], None] | None = None,
    reference: str | None = None,
) -> JobCreateOutcome:
    model_version = current_model_version()
    rules = eligibility.rules_for(client)
    existing = selectors.live_job(client=client, sha256=sha256, model_version=model_version)
    if existing is not None:
        # The client's rules may have changed since: a cached score is no answer to an image they refuse.
        check_acquisition(existing.acquisition, rules=rules)
        job = _with_reference(_sent_again(existing, priority, callback_url), reference)
        return JobCreateOutcome(job=job, deduplicated=True)

    # An organisation that shares its cache answers from a member's result: no inference, so
    # no backpressure either. The new job is this client's own; nothing names the other's.
    shared = selectors.organisation_result(client=client, sha256=sha256, model_version=model_version)
    if shared is None:
        _check_backpressure(client)
    # Validated and de-identified: info.stored_bytes, not the upload, is what rests on disk.
    info = images.accept_image(
        data,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        min_side=settings.IMAGE_MIN_SIDE,
        dicom_max_header_bytes=settings.DICOM_MAX_HEADER_BYTES,
        dicom_accept_burned_in=settings.DICOM_ACCEPT_BURNED_IN_ANNOTATION,
    )
    check_acquisition(info.acquisition, rules=rules)
    job = Job(
        client=client,
        priority=priority,
        sha256=sha256,
        model_version=model_version,
        original_filename=images.stored_filename(original_filename, keep=settings.STORE_ORIGINAL_FILENAME),
        content_type=images.stored_content_type(content_type),
        image_format=info.image_format,
        size_bytes=len(data),
        acquisition=info.acquisition,
        request_id=_request_id(),
        callback_url=callback_url,
    )
    job.reference = reference or _dicom_reference(client, info)
    if shared is not None:
        job.status, job.started_at, job.finished_at = JobStatus.SUCCEEDED, timezone.now(), timezone.now()
    job.upload.save(f"{job.id}.{info.extension}", ContentFile(info.stored_bytes), save=False)
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            if on_create is not None:
                on_create(job)
            if shared is None:
                wake_workers([job.id])
            else:
                JobResult.objects.create(
                    job=job,
                    probabilities=shared.probabilities,
                    provenance=shared.provenance | {"answered_from": "organisation_cache"},
                    timings={},
                )
                webhooks.schedule([(job.id, callback_url)], status=job.status)
    except IntegrityError:
        job.upload.delete(save=False)
        winner = selectors.live_job(client=client, sha256=sha256, model_version=model_version)
        if winner is None:  # the winner failed in between: vanishingly rare, let the client retry
            raise
        return JobCreateOutcome(job=_with_reference(winner, reference), deduplicated=True)
    except BaseException:
        job.upload.delete(save=False)
        raise
    logger.info(
        "event=job_created job_id=%s client_id=%s sha256=%s format=%s bytes=%d organisation_cache=%s",
        job.id,
        client.id,
        sha256[:12],
        info.image_format,
        len(data),
        shared is not None,
    )
    return JobCreateOutcome(job=job, deduplicated=shared is not None)


def check_acquisition(acquisition: dict, *, rules: eligibility.EligibilityRules) -> eligibility.Facts:
    """Whether an accepted image (its acquisition facts, as intake recorded them) is a chest X-ray
    under these rules: its facts, or NotChestXray. PNG and JPEG record none: all absent."""
    return eligibility.check_eligibility(
        modality=acquisition.get("modality"),
        body_part=acquisition.get("body_part_examined"),
        view=acquisition.get("view_position"),
        sop_class=acquisition.get("sop_class"),
        rules=rules,
    )


def _sent_again(existing: Job, priority: Priority, callback_url: str) -> Job:
    """The client's live job for these bytes, sent again: a STAT send moves a queued routine job
    up; a callback_url replaces the job's (the latest send's wins), or, on a job that has already
    ended, is told at once."""
    live = Job.objects.filter(id=existing.id, status__in=[JobStatus.QUEUED, JobStatus.IN_PROGRESS])
    moved_up = priority < existing.priority and live.filter(status=JobStatus.QUEUED).update(priority=priority)
    new_callback = callback_url and callback_url != existing.callback_url
    if new_callback:
        with transaction.atomic():
            if not live.update(callback_url=callback_url):
                # Ended already (or ending right now: then its end has its own delivery too).
                Job.objects.filter(id=existing.id).update(callback_url=callback_url)
                existing.refresh_from_db()
                webhooks.redeliver_for(existing, callback_url)
    if moved_up or new_callback:
        existing.refresh_from_db()
    return existing


def _dicom_reference(client: Client, info: images.AcceptedImage) -> str | None:
    """A DICOM upload's default reference under the client's rule (its Accession Number), if valid."""
    if client.reference_from_dicom != "accession_number":
        return None
    return references.from_dicom(info.accession_number)


def _with_reference(job: Job, reference: str | None) -> Job:
    """A job returned for bytes sent again takes the caller's reference only if it has none
    (the first reference stays: a later send never relabels a job the client already knows)."""
    if reference and not job.reference_hash:
        job.reference = reference
        Job.objects.filter(id=job.id, reference_hash="").update(
            reference_sealed=job.reference_sealed, reference_hash=job.reference_hash
        )
        job.refresh_from_db(fields=["reference_sealed", "reference_hash"])
    return job


def _request_id() -> str:
    """The X-Request-ID of the upload in hand (RequestIdMiddleware), for the worker's log lines."""
    value = request_id_var.get()
    return "" if value == "-" else value


def _check_backpressure(client: Client) -> None:
    """Refuse new inference work while the whole queue is over MAX_QUEUE_DEPTH (503), or this
    client's share of it is over its cap (429: other clients are still served)."""
    limit = settings.MAX_QUEUE_DEPTH
    if limit > 0 and (depth := selectors.queue_depth(at_most=limit)) >= limit:
        raise errors.QueueFull(
            details={"queue_depth": depth, "max_queue_depth": limit},
            retry_after=settings.QUEUE_FULL_RETRY_AFTER_SECONDS,
        )
    cap = client.queued_jobs_cap
    if cap > 0 and (mine := selectors.queue_depth(client=client, at_most=cap)) >= cap:
        raise errors.ClientQueueFull(
            details={"queued_jobs": mine, "max_queued_jobs": cap},
            retry_after=settings.QUEUE_FULL_RETRY_AFTER_SECONDS,
        )

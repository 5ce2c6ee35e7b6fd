"""Writes: creating jobs, claiming batches, storing results, failing jobs.

Every state change is a guarded UPDATE whose row count is checked; nothing
reads a status and then writes it back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from backend.jobs import errors, intake, selectors
from backend.jobs.dispatch import wake_workers
from backend.jobs.models import IdempotencyKey, Job, JobResult, JobStatus, WorkerHeartbeat
from worker.model_identity import current_model_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCreateOutcome:
    job: Job
    deduplicated: bool


def _live_job(*, sha256: str, model_version: str) -> Job | None:
    return (
        Job.objects.select_related("result")
        .exclude(status=JobStatus.FAILED)
        .filter(sha256=sha256, model_version=model_version)
        .first()
    )


def job_create(
    *, upload, original_filename: str = "", content_type: str = "", idempotency_key: str | None = None
) -> JobCreateOutcome:
    """Create a job for an upload, or return the live job for the same bytes and model.

    Cache hits are answered before the image is decoded or the queue depth is
    looked at. With an Idempotency-Key, a replay returns the job the key first
    answered with, and the key with different bytes is refused (409).
    """
    data = intake.read_upload(upload, max_bytes=settings.UPLOAD_MAX_BYTES)
    sha256 = intake.sha256_of(data)
    if not idempotency_key:
        return _create_or_dedup(
            data=data, sha256=sha256, original_filename=original_filename, content_type=content_type
        )

    key_job = _claim_idempotency_key(key=idempotency_key, sha256=sha256)
    if key_job is not None:
        return JobCreateOutcome(job=key_job, deduplicated=True)
    try:
        outcome = _create_or_dedup(
            data=data, sha256=sha256, original_filename=original_filename, content_type=content_type
        )
    except BaseException:
        # Nothing was accepted under this key: free it so the client can retry.
        IdempotencyKey.objects.filter(key=idempotency_key, job__isnull=True).delete()
        raise
    IdempotencyKey.objects.filter(key=idempotency_key, job__isnull=True).update(job=outcome.job)
    return outcome


def _claim_idempotency_key(*, key: str, sha256: str) -> Job | None:
    """Record the key for these bytes. Returns the key's job on a replay, None for a first use."""
    if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise errors.InvalidIdempotencyKey()
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(key=key, request_sha256=sha256)
        return None
    except IntegrityError:
        existing = IdempotencyKey.objects.select_related("job__result").get(key=key)
    if existing.request_sha256 != sha256:
        raise errors.IdempotencyKeyReused(details={"idempotency_key": key})
    # Same key, same bytes: the first request's job, or (while it is still in
    # flight) whatever dedup returns for these bytes, which is the same job.
    return existing.job


def _create_or_dedup(
    *, data: bytes, sha256: str, original_filename: str, content_type: str
) -> JobCreateOutcome:
    model_version = current_model_version()
    existing = _live_job(sha256=sha256, model_version=model_version)
    if existing is not None:
        return JobCreateOutcome(job=existing, deduplicated=True)

    _check_backpressure()
    # Validated and de-identified: info.stored_bytes, not the upload, is what rests on disk.
    info = intake.accept_image(
        data,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        min_side=settings.IMAGE_MIN_SIDE,
        dicom_max_header_bytes=settings.DICOM_MAX_HEADER_BYTES,
        dicom_accept_burned_in=settings.DICOM_ACCEPT_BURNED_IN_ANNOTATION,
    )
    job = Job(
        sha256=sha256,
        model_version=model_version,
        original_filename=intake.stored_filename(original_filename, keep=settings.STORE_ORIGINAL_FILENAME),
        content_type=intake.stored_content_type(content_type),
        image_format=info.image_format,
        size_bytes=len(data),
        acquisition=info.acquisition,
    )
    job.upload.save(f"{job.id}.{info.extension}", ContentFile(info.stored_bytes), save=False)
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            wake_workers([job.id])
    except IntegrityError:
        job.upload.delete(save=False)
        winner = _live_job(sha256=sha256, model_version=model_version)
        if winner is None:  # the winner failed in between: vanishingly rare, let the client retry
            raise
        return JobCreateOutcome(job=winner, deduplicated=True)
    except BaseException:
        job.upload.delete(save=False)
        raise
    logger.info(
        "event=job_created job_id=%s sha256=%s format=%s bytes=%d",
        job.id,
        sha256[:12],
        info.image_format,
        len(data),
    )
    return JobCreateOutcome(job=job, deduplicated=False)


def _check_backpressure() -> None:
    """Refuse new inference work (503) while the queue is over MAX_QUEUE_DEPTH."""
    limit = settings.MAX_QUEUE_DEPTH
    if limit <= 0:
        return
    depth = selectors.queue_depth()
    if depth >= limit:
        raise errors.QueueFull(
            details={"queue_depth": depth, "max_queue_depth": limit},
            retry_after=settings.QUEUE_FULL_RETRY_AFTER_SECONDS,
        )


# --- worker side ---------------------------------------------------------------


@dataclass
class ClaimedBatch:
    batch_id: uuid.UUID
    claim_token: uuid.UUID
    worker_id: str
    jobs: list[Job] = field(default_factory=list)

    @property
    def job_ids(self) -> list[uuid.UUID]:
        return [j.id for j in self.jobs]


def _db_uuid(value: uuid.UUID) -> Any:
    return Job._meta.get_field("claim_token").get_db_prep_value(value, connection)


def _db_dt(value) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM jobs_job
    WHERE status = 'QUEUED' AND model_version = %s
      AND (available_at IS NULL OR available_at <= %s)
      AND attempts {attempts}
    ORDER BY created_at
    LIMIT %s
    {lock}
)
UPDATE jobs_job
SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = %s,
    claimed_by = %s, claim_token = %s, lease_expires_at = %s, batch_id = %s
WHERE id IN (SELECT id FROM picked) AND status = 'QUEUED'
RETURNING id
"""


# What "nobody holds this job" means: set whenever a job goes back to the queue.
_UNCLAIMED = {"claimed_by": "", "claim_token": None, "lease_expires_at": None, "batch_id": None}


def job_claim_batch(*, worker_id: str, model_version: str, max_size: int) -> ClaimedBatch:
    """Claim up to max_size queued jobs in at most three queries, whatever the batch size.

    PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED picks rows no other claimer
    holds, and the same statement moves them to IN_PROGRESS with a fresh claim
    token and lease. SQLite (embedded default) has no row locks, but it runs
    the statement under its single writer lock, and the status guard keeps it exact.

    A job that was attempted before (its worker died, hung or hit a transient
    error) is claimed alone: if it is the poison that killed its batch, it can
    only take itself down next time, and its batch mates run without it.
    """
    now = timezone.now()
    batch = ClaimedBatch(batch_id=uuid.uuid4(), claim_token=uuid.uuid4(), worker_id=worker_id)
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    lease = now + timedelta(seconds=settings.LEASE_SECONDS)
    params_tail = [
        _db_dt(now),
        worker_id,
        _db_uuid(batch.claim_token),
        _db_dt(lease),
        _db_uuid(batch.batch_id),
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            claimed = 0
            for attempts, limit in (("> 0", 1), ("= 0", max_size)):
                cursor.execute(
                    _CLAIM_SQL.format(lock=lock, attempts=attempts),
                    [model_version, _db_dt(now), limit, *params_tail],
                )
                # RETURNING, not rowcount: Python's sqlite3 reports -1 for a statement
                # that starts with WITH.
                claimed = len(cursor.fetchall())
                if claimed:
                    break
        if claimed:
            batch.jobs = list(Job.objects.filter(claim_token=batch.claim_token).order_by("created_at"))
    return batch


def job_queued_count(*, model_version: str) -> int:
    return Job.objects.filter(status=JobStatus.QUEUED, model_version=model_version).count()


@dataclass(frozen=True)
class InferenceOutcome:
    job_id: uuid.UUID
    probabilities: dict[str, float]
    provenance: dict[str, Any]
    timings: dict[str, Any]


def job_store_results(*, batch: ClaimedBatch, outcomes: list[InferenceOutcome]) -> list[uuid.UUID]:
    """Store results and move their jobs to SUCCEEDED, for jobs this claim still holds.

    Rows are locked first, so a reaper cannot requeue a job between our check
    and our write; a job whose claim token changed (its lease expired and it
    was reclaimed) is skipped and its late result dropped.
    """
    if not outcomes:
        return []
    by_id = {o.job_id: o for o in outcomes}
    with transaction.atomic():
        held = list(
            Job.objects.select_for_update()
            .filter(id__in=list(by_id), status=JobStatus.IN_PROGRESS, claim_token=batch.claim_token)
            .values_list("id", flat=True)
        )
        if held:
            JobResult.objects.bulk_create(
                [
                    JobResult(
                        job_id=job_id,
                        probabilities=by_id[job_id].probabilities,
                        provenance=by_id[job_id].provenance,
                        timings=by_id[job_id].timings,
                    )
                    for job_id in held
                ]
            )
            updated = Job.objects.filter(
                id__in=held, status=JobStatus.IN_PROGRESS, claim_token=batch.claim_token
            ).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now(), lease_expires_at=None)
            if updated != len(held):  # rows are locked: this would be a bug, never a race
                raise RuntimeError(f"stored {len(held)} results but updated {updated} jobs")
    dropped = set(by_id) - set(held)
    if dropped:
        logger.warning(
            "event=results_dropped batch_id=%s job_ids=%s reason=claim_lost",
            batch.batch_id,
            ",".join(map(str, dropped)),
        )
    return held


def job_fail(*, job_id: uuid.UUID, claim_token: uuid.UUID, code: str, message: str) -> bool:
    """Fail one job held by this claim. Returns False when the claim was lost."""
    updated = Job.objects.filter(id=job_id, status=JobStatus.IN_PROGRESS, claim_token=claim_token).update(
        status=JobStatus.FAILED,
        error_code=code[:64],
        error_message=message[:2000],
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    return updated == 1


def job_release(*, job_ids: list[uuid.UUID], claim_token: uuid.UUID) -> int:
    """Give claimed jobs back to the queue (e.g. on shutdown), undoing the attempt."""
    released = Job.objects.filter(
        id__in=job_ids, status=JobStatus.IN_PROGRESS, claim_token=claim_token
    ).update(
        status=JobStatus.QUEUED,
        attempts=F("attempts") - 1,
        **_UNCLAIMED,
        started_at=None,
    )
    if released:
        wake_workers(job_ids)
    return released


def _backoff_seconds(attempts: int) -> float:
    return settings.RETRY_BACKOFF_SECONDS * (2 ** max(attempts - 1, 0))


def job_retry_later(*, job_ids: list[uuid.UUID], claim_token: uuid.UUID, code: str, message: str) -> dict:
    """After a transient error: back to the queue with exponential backoff, or FAILED
    once MAX_ATTEMPTS is reached. Guarded by the claim token like every transition."""
    now = timezone.now()
    held = Job.objects.filter(id__in=job_ids, status=JobStatus.IN_PROGRESS, claim_token=claim_token)
    failed = held.filter(attempts__gte=settings.MAX_ATTEMPTS).update(
        status=JobStatus.FAILED,
        error_code=code[:64],
        error_message=f"gave up after {settings.MAX_ATTEMPTS} attempts: {message}"[:2000],
        finished_at=now,
        lease_expires_at=None,
    )
    requeued = 0
    for attempts in sorted(set(held.values_list("attempts", flat=True))):
        requeued += held.filter(attempts=attempts).update(
            status=JobStatus.QUEUED,
            error_code=code[:64],
            error_message=message[:2000],
            **_UNCLAIMED,
            available_at=now + timedelta(seconds=_backoff_seconds(attempts)),
        )
    return {"requeued": requeued, "failed": failed}


# --- leases, reaper, sweeper ------------------------------------------------------------


def job_renew_leases(*, claim_token: uuid.UUID) -> int:
    """Extend the leases of the batch a worker is running (called from its heartbeat).

    Only the batch in hand: jobs a worker claimed and then lost track of (an
    error escaped the batch) must lapse, so the reaper gives them to someone.
    """
    return Job.objects.filter(status=JobStatus.IN_PROGRESS, claim_token=claim_token).update(
        lease_expires_at=timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)
    )


def job_reap_expired() -> dict[str, list[uuid.UUID]]:
    """Return jobs whose lease expired to the queue, or fail them after MAX_ATTEMPTS.

    The holder died, froze or was killed for running too long. The claim token
    is cleared, so if it comes back its results are refused. Safe to run from
    every worker at once: rows are locked with SKIP LOCKED and each UPDATE is
    guarded by status and lease.
    """
    now = timezone.now()
    with transaction.atomic():
        expired = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=JobStatus.IN_PROGRESS, lease_expires_at__lt=now)
            .values_list("id", "attempts")
        )
        to_fail = [i for i, a in expired if a >= settings.MAX_ATTEMPTS]
        to_queue = [i for i, a in expired if a < settings.MAX_ATTEMPTS]
        guarded = Job.objects.filter(status=JobStatus.IN_PROGRESS, lease_expires_at__lt=now)
        if to_fail:
            guarded.filter(id__in=to_fail).update(
                status=JobStatus.FAILED,
                error_code="max_attempts_exceeded",
                error_message=(
                    f"the worker running this image was lost {settings.MAX_ATTEMPTS} times "
                    "(crashed, hung or was killed); it is not retried again"
                ),
                finished_at=now,
                claim_token=None,
                lease_expires_at=None,
            )
        if to_queue:
            guarded.filter(id__in=to_queue).update(
                status=JobStatus.QUEUED,
                error_code="lease_expired",
                error_message="the worker running this job was lost; requeued",
                **_UNCLAIMED,
            )
            wake_workers(to_queue)
    if expired:
        logger.warning(
            "event=leases_expired requeued=%s failed=%s",
            ",".join(map(str, to_queue)) or "-",
            ",".join(map(str, to_fail)) or "-",
        )
    return {"requeued": to_queue, "failed": to_fail}


def job_sweep_queued(*, older_than_seconds: float, limit: int = 100) -> list[uuid.UUID]:
    """Wake workers for queued jobs that have waited too long (their wake-up was lost:
    broker restarted or flushed, or down when the job was created). Extra wake-ups are harmless."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    ids = list(
        Job.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff)
        .exclude(available_at__gt=now)
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )
    if ids:
        wake_workers(ids)
    return ids


def job_requeue(*, job_ids: list[uuid.UUID], statuses: tuple[str, ...]) -> list[uuid.UUID]:
    """Operator action: put jobs back in the queue with a fresh attempt budget.

    A FAILED job whose bytes already have a newer live job is skipped (the
    dedup constraint would refuse it, and the newer job is the one to follow).
    """
    requeued = []
    for job_id in job_ids:
        try:
            with transaction.atomic():
                updated = Job.objects.filter(id=job_id, status__in=statuses).update(
                    status=JobStatus.QUEUED,
                    attempts=0,
                    error_code="",
                    error_message="",
                    **_UNCLAIMED,
                    available_at=None,
                    started_at=None,
                    finished_at=None,
                )
        except IntegrityError:
            continue
        if updated:
            requeued.append(job_id)
    if requeued:
        wake_workers(requeued)
    return requeued


def job_fail_by_operator(*, job_ids: list[uuid.UUID], reason: str) -> int:
    """Operator action: fail queued or stuck jobs for good."""
    return Job.objects.filter(id__in=job_ids, status__in=[JobStatus.QUEUED, JobStatus.IN_PROGRESS]).update(
        status=JobStatus.FAILED,
        error_code="failed_by_operator",
        error_message=reason[:2000],
        finished_at=timezone.now(),
        claim_token=None,
        lease_expires_at=None,
    )


def worker_heartbeat(*, worker_id: str, hostname: str, pid: int, model_version: str, info: dict) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "hostname": hostname,
            "pid": pid,
            "model_version": model_version,
            "info": info,
            "last_seen_at": now,
        },
        create_defaults={
            "hostname": hostname,
            "pid": pid,
            "model_version": model_version,
            "info": info,
            "last_seen_at": now,
            "started_at": now,
        },
    )


def worker_signoff(*, worker_id: str) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()

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
from django.utils import timezone

from backend.jobs import intake
from backend.jobs.dispatch import wake_workers
from backend.jobs.models import Job, JobResult, JobStatus, WorkerHeartbeat
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


def job_create(*, upload, original_filename: str = "", content_type: str = "") -> JobCreateOutcome:
    """Create a job for an upload, or return the live job for the same bytes and model.

    Cache hits are answered before the image is decoded. The unique constraint
    decides races: the loser deletes its file and returns the winner's job.
    """
    data = intake.read_upload(upload, max_bytes=settings.UPLOAD_MAX_BYTES)
    sha256 = intake.sha256_of(data)
    model_version = current_model_version()

    existing = _live_job(sha256=sha256, model_version=model_version)
    if existing is not None:
        return JobCreateOutcome(job=existing, deduplicated=True)

    info = intake.inspect_image(data, max_pixels=settings.IMAGE_MAX_PIXELS, min_side=settings.IMAGE_MIN_SIDE)
    job = Job(
        sha256=sha256,
        model_version=model_version,
        original_filename=(original_filename or "")[:255],
        content_type=(content_type or "")[:100],
        image_format=info.image_format,
        size_bytes=len(data),
    )
    job.upload.save(f"{job.id}.{info.extension}", ContentFile(data), save=False)
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
    ORDER BY created_at
    LIMIT %s
    {lock}
)
UPDATE jobs_job
SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = %s,
    claimed_by = %s, claim_token = %s, lease_expires_at = %s, batch_id = %s
WHERE id IN (SELECT id FROM picked) AND status = 'QUEUED'
"""


def job_claim_batch(*, worker_id: str, model_version: str, max_size: int) -> ClaimedBatch:
    """Claim up to max_size queued jobs in two queries, whatever the batch size.

    PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED picks rows no other claimer
    holds, and the same statement moves them to IN_PROGRESS with a fresh claim
    token and lease. SQLite (embedded default) has no row locks, but it runs
    the statement under its single writer lock, and the status guard keeps it exact.
    """
    now = timezone.now()
    batch = ClaimedBatch(batch_id=uuid.uuid4(), claim_token=uuid.uuid4(), worker_id=worker_id)
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL.format(lock=lock),
                [
                    model_version,
                    max_size,
                    _db_dt(now),
                    worker_id,
                    _db_uuid(batch.claim_token),
                    _db_dt(now + timedelta(seconds=settings.LEASE_SECONDS)),
                    _db_uuid(batch.batch_id),
                ],
            )
            claimed = cursor.rowcount
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
    from django.db.models import F

    return Job.objects.filter(id__in=job_ids, status=JobStatus.IN_PROGRESS, claim_token=claim_token).update(
        status=JobStatus.QUEUED,
        attempts=F("attempts") - 1,
        claimed_by="",
        claim_token=None,
        lease_expires_at=None,
        batch_id=None,
        started_at=None,
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

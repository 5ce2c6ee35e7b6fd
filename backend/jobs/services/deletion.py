"""Deletion and retention: a client deletes a job now; the purge removes what has outlived its window.

A deleted job stays as a tombstone (status DELETED, deleted_at), not removed: its id keeps
answering (a client that deletes and then polls learns it was deleted, not "never existed"),
the audit log's references stay meaningful, and an operator can count what was deleted and
when. What made it personal data goes: the stored image (the file), the result row, the
acquisition facts, file name and client reference, the webhook payloads that carried the result, and its
Idempotency-Keys (a retry with the key makes a new job). Dedup skips DELETED, so the same bytes
can be uploaded again and are analysed afresh.

Retention (`purge_expired`: `manage.py purge_expired`, and the dispatcher's schedule) counts days
from a job's end, per client (Client.image_retention_days / result_retention_days, else
CXRQ_IMAGE_RETENTION_DAYS / CXRQ_RESULT_RETENTION_DAYS; 0 keeps). Past the image window the file
goes and the result stays (a cache hit still answers); past the result window the job becomes a
tombstone. Queued and in-progress jobs are never purged. Every deletion is in the audit log.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from backend.audit.services import Actor, audit_write
from backend.clients.models import Client
from backend.dicomnet.returnpath import return_paths_forget
from backend.interop.store import reports_forget
from backend.jobs import errors, selectors
from backend.jobs.events import announce_ended
from backend.jobs.models import IdempotencyKey, Job, JobResult, JobStatus, Transition
from backend.webhooks.models import DeliveryStatus, WebhookDelivery

logger = logging.getLogger(__name__)

# What may become a tombstone: anything not being analysed right now.
DELETABLE = (JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
PURGE_CHUNK = 500


def job_delete(*, client: Client, job_id: str | uuid.UUID) -> Job:
    """Delete the client's job now: 404 for another client's, 409 while it is being analysed.
    Deleting a deleted job again is harmless: the answer is the tombstone."""
    job = selectors.job_get(client=client, job_id=job_id)
    if job.status != JobStatus.DELETED and not tombstone(Job.objects.filter(id=job.id, client=client)):
        job.refresh_from_db(fields=["status"])
        if job.status != JobStatus.DELETED:
            raise errors.JobInProgress(details={"status": job.status.lower()})
    return selectors.job_get(client=client, job_id=job.id)


def tombstone(jobs: QuerySet[Job], *, now: datetime | None = None) -> list[uuid.UUID]:
    """Make the deletable ones of `jobs` tombstones (one guarded UPDATE); their ids."""
    with transaction.atomic():
        rows = list(jobs.filter(status__in=DELETABLE).values_list("id", "upload"))
        if not rows:
            return []
        ids = [job_id for job_id, _ in rows]
        moved = jobs.filter(id__in=ids, status__in=DELETABLE)
        updated = moved.update(
            status=JobStatus.DELETED,
            deleted_at=now or Now(),
            image_deleted_at=Coalesce("image_deleted_at", Now()),
            finished_at=Coalesce("finished_at", Now()),
            upload="",
            original_filename="",
            acquisition={},
            reference_sealed=None,
            reference_hash="",
            claim_token=None,
            lease_expires_at=None,
        )
        if updated < len(ids):  # one was claimed in between: only the ones moved are deleted
            ids = list(Job.objects.filter(id__in=ids, status=JobStatus.DELETED).values_list("id", flat=True))
            rows = [row for row in rows if row[0] in set(ids)]
        JobResult.objects.filter(job_id__in=ids).delete()
        IdempotencyKey.objects.filter(job_id__in=ids).delete()
        WebhookDelivery.objects.filter(job_id__in=ids).update(payload=None)
        return_paths_forget(ids, reason="job_deleted")  # the PHI kept to return a DICOM job's result
        WebhookDelivery.objects.filter(job_id__in=ids, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.GAVE_UP,
            finished_at=timezone.now(),
            next_attempt_at=None,
            last_error="job_deleted",
        )
        files = [name for _, name in rows if name]
        transaction.on_commit(lambda: _delete_files(files))
    announce_ended(ids)  # a client waiting on a queued job it deleted is answered now
    logger.info("event=jobs_deleted transition=%s jobs=%d", Transition.DELETE.value, len(ids))
    return ids


def _delete_files(names: list[str]) -> int:
    deleted = 0
    for name in names:
        try:
            default_storage.delete(name)
            deleted += 1
        except OSError:
            # The row no longer names it: nothing will read it again. Logged for the operator.
            logger.warning("event=stored_image_not_deleted name=%s", name, exc_info=True)
    return deleted


@dataclass
class PurgeOutcome:
    images_deleted: int = 0
    jobs_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def purge_expired(*, now: datetime | None = None) -> PurgeOutcome:
    """Delete what has outlived its window, client by client, in chunks; audit every job touched."""
    now = now or timezone.now()
    outcome = PurgeOutcome()
    for client in Client.objects.all().iterator():
        ended = Job.objects.filter(client=client, status__in=JobStatus.ended()).exclude(
            status=JobStatus.DELETED
        )
        if client.result_retention:
            cutoff = now - timedelta(days=client.result_retention)
            while ids := tombstone(
                Job.objects.filter(
                    id__in=list(
                        ended.filter(finished_at__lt=cutoff).values_list("id", flat=True)[:PURGE_CHUNK]
                    )
                ),
                now=now,
            ):
                audit_write(
                    actor=_retention(client),
                    action="job.expired",
                    job_ids=ids,
                    details={"days": client.result_retention},
                )
                outcome.jobs_deleted += len(ids)
        if client.image_retention:
            cutoff = now - timedelta(days=client.image_retention)
            while ids := _delete_images(
                ended.filter(finished_at__lt=cutoff, image_deleted_at__isnull=True), now=now
            ):
                audit_write(
                    actor=_retention(client),
                    action="job.image_purged",
                    job_ids=ids,
                    details={"days": client.image_retention},
                )
                outcome.images_deleted += len(ids)
    if outcome.images_deleted or outcome.jobs_deleted:
        logger.info("event=retention_purged images=%d jobs=%d", outcome.images_deleted, outcome.jobs_deleted)
    return outcome


def _retention(client: Client) -> Actor:
    """The purge acts for nobody: the actor is the system, the event names whose job it was."""
    return Actor(kind="system", client_id=client.id)


def _delete_images(jobs: QuerySet[Job], *, now: datetime) -> list[uuid.UUID]:
    """The stored image of up to PURGE_CHUNK of `jobs` that have ended; the job and its result stay.
    The rows are locked while it runs (PostgreSQL), so a job cannot be requeued in between (an
    operator's requeue skips jobs without an image)."""
    ended = [s for s in JobStatus.ended() if s != JobStatus.DELETED]
    with transaction.atomic():
        candidates = jobs.filter(status__in=ended, image_deleted_at__isnull=True)
        rows = list(candidates.select_for_update(skip_locked=True).values_list("id", "upload")[:PURGE_CHUNK])
        ids = [job_id for job_id, _ in rows]
        if not ids:
            return []
        Job.objects.filter(id__in=ids).update(image_deleted_at=now, upload="")
        return_paths_forget(ids, reason="image_deleted")  # its PHI goes with the image it came with
        reports_forget(ids, reason="image_deleted")  # the SR/FHIR built while it was there
        files = [name for _, name in rows if name]
        transaction.on_commit(lambda: _delete_files(files))
    return ids


def images_delete(job_ids: list[uuid.UUID], *, now: datetime | None = None) -> list[uuid.UUID]:
    """Delete the stored image of these jobs now (an operator's purge, before retention would);
    each job and its result stay, so a cache hit still answers. Only ended jobs that still have
    one (succeeded, failed, cancelled): a queued or running job needs its image. Not audited here:
    the caller knows the actor. The ids of the jobs whose image went."""
    jobs = Job.objects.filter(
        id__in=list(job_ids),
        status__in=(JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED),
        image_deleted_at__isnull=True,
    )
    deleted: list[uuid.UUID] = []
    while ids := _delete_images(jobs, now=now or timezone.now()):
        deleted += ids
    return deleted

"""The worker's side of a job: claim a batch, then store its results, fail it, retry it
later, or release it. Every move is guarded by the batch's claim token, so a worker
whose lease expired (and whose jobs went to someone else) can change nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from backend.jobs.claim_order import head_cte, head_params, waiting_cte, waiting_params
from backend.jobs.dispatch import wake_workers
from backend.jobs.models import Job, JobResult, JobStatus, Transition
from backend.jobs.services.transitions import ERROR_CODE_MAX, ERROR_MESSAGE_MAX, to_queue, to_terminal

logger = logging.getLogger(__name__)


@dataclass
class ClaimedBatch:
    batch_id: uuid.UUID
    claim_token: uuid.UUID
    worker_id: str
    jobs: list[Job] = field(default_factory=list)

    @property
    def job_ids(self) -> list[uuid.UUID]:
        return [j.id for j in self.jobs]


@dataclass(frozen=True)
class InferenceOutcome:
    job_id: uuid.UUID
    probabilities: dict[str, float]
    provenance: dict[str, Any]
    timings: dict[str, Any]


def _db_uuid(value: uuid.UUID) -> Any:
    return Job._meta.get_field("claim_token").get_db_prep_value(value, connection)


def _db_dt(value) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


# One statement picks and moves the rows, from the front of the claim order (claim_order.py:
# STAT first, routine promoted by age, clients taking turns). So with one client holding 1,000
# queued jobs, another client's job submitted after them is in the next batch, not after the
# backlog. PostgreSQL: FOR UPDATE SKIP LOCKED
# skips rows another claimer holds and keeps filling the batch past them. SQLite (the embedded
# default) has no row locks but runs the statement under its single writer lock; the status
# guard keeps it exact there too.
#
# `j.status` is checked in `picked` too: a row another claimer moved after this statement's snapshot
# is re-read when locked (READ COMMITTED), fails the check there and does not count against the
# LIMIT, so the batch fills from the rows behind it. Checked only in the UPDATE, such rows took
# places in the batch and left it short (a third of claims at 4 claimers, make capacity).
_PICK_SQL = """,
picked AS (
    SELECT j.id FROM jobs_job j JOIN {waiting} w ON w.id = j.id
    WHERE j.status = '{queued}'
    ORDER BY w.urgency, w.turn, w.created_at
    LIMIT %s
    {lock}
)"""

# When rows of the head's front are held by claimers running at this moment (more of them than the
# front is deep), the batch is topped up with rows behind, as the index gives them: fair turns and
# priority are set aside for those rows (the rows ahead are being claimed right now), which costs
# a batch's rows read, where the whole order would read the whole queue (cascading under load).
_PICK_ANY_SQL = """
picked AS (
    SELECT j.id FROM jobs_job j
    WHERE j.status = '{queued}' AND j.model_version = %s AND j.attempts = 0
      AND (j.available_at IS NULL OR j.available_at <= %s)
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)"""

_MOVE_SQL = """
UPDATE jobs_job
SET status = '{in_progress}', attempts = attempts + 1, started_at = %s,
    claimed_by = %s, claim_token = %s, lease_expires_at = %s, batch_id = %s
WHERE id IN (SELECT id FROM picked) AND status = '{queued}'
RETURNING id
"""


def job_claim_batch(*, worker_id: str, model_version: str, max_size: int) -> ClaimedBatch:
    """Claim up to max_size queued jobs in at most three queries, whatever the batch size:
    the retried-jobs pass, the fresh-jobs pass (only when the first found nothing), and
    the read of the claimed rows.

    A job that was attempted before (its worker died, hung or hit a transient
    error) is claimed alone: if it is the poison that killed its batch, it can
    only take itself down next time, and its batch mates run without it.
    """
    now = timezone.now()
    batch = ClaimedBatch(batch_id=uuid.uuid4(), claim_token=uuid.uuid4(), worker_id=worker_id)
    lock = "FOR UPDATE OF j SKIP LOCKED" if connection.vendor == "postgresql" else ""
    lease = now + timedelta(seconds=settings.LEASE_SECONDS)
    params_tail = [
        _db_dt(now),
        worker_id,
        _db_uuid(batch.claim_token),
        _db_dt(lease),
        _db_uuid(batch.batch_id),
    ]
    statuses = {"queued": JobStatus.QUEUED, "in_progress": JobStatus.IN_PROGRESS}
    move = _MOVE_SQL.format(**statuses)
    pick_and_move = _PICK_SQL.format(lock=lock, waiting="waiting", **statuses) + move
    # The bounded pass joins and locks only the front of the head's order (what concurrent
    # claimers may hold: four times a client's head), not every head row.
    pick_and_move_head = (
        _PICK_SQL.format(
            lock=lock,
            waiting="(SELECT * FROM waiting ORDER BY urgency, turn, created_at LIMIT %s)",
            **statuses,
        )
        + move
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            claimed: list = []
            for attempts, limit in (("> 0", 1), ("= 0", max_size)):
                # Retried jobs are few (their partial index holds only them): the whole order.
                # Fresh ones on PostgreSQL: the head of each client's queue, deep enough that
                # concurrent claimers holding its first rows leave this one the rows behind.
                bounded = attempts == "= 0" and connection.vendor == "postgresql"
                if bounded:
                    depth = limit * settings.CLAIM_HEAD_FACTOR
                    sql = "WITH " + head_cte(attempts=attempts) + pick_and_move_head
                    params = [*head_params(model_version=model_version, now=now, depth=depth), 4 * depth]
                else:
                    sql = "WITH " + waiting_cte(attempts=attempts) + pick_and_move
                    params = waiting_params(model_version=model_version, now=now)
                cursor.execute(sql, [*params, limit, *params_tail])
                # RETURNING, not rowcount: Python's sqlite3 reports -1 for a statement
                # that starts with WITH.
                claimed = [row[0] for row in cursor.fetchall()]
                if bounded and len(claimed) < limit:
                    # The head's front was held by other claimers (more of them at once than it is
                    # deep), or fewer jobs are queued (then this reads what is left of the index):
                    # the batch is topped up rather than left short or empty, which would end this
                    # worker's drain with jobs still queued.
                    cursor.execute(
                        "WITH " + _PICK_ANY_SQL.format(**statuses) + move,
                        [model_version, _db_dt(now), limit - len(claimed), *params_tail],
                    )
                    claimed += [row[0] for row in cursor.fetchall()]
                if claimed:
                    break
        if claimed:
            # By the ids RETURNING gave: claim_token has no index, and the queue may be long.
            batch.jobs = list(Job.objects.filter(id__in=claimed).order_by("created_at"))
    return batch


def _held(job_ids: list[uuid.UUID], claim_token: uuid.UUID) -> QuerySet[Job]:
    """The guard of every move a worker makes: still in progress, still under this claim."""
    return Job.objects.filter(id__in=job_ids, status=JobStatus.IN_PROGRESS, claim_token=claim_token)


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
        locked = list(
            _held(list(by_id), batch.claim_token).select_for_update().values_list("id", "cancel_requested_at")
        )
        held = [job_id for job_id, _ in locked]
        # A job cancelled while it ran ends CANCELLED (to_terminal): its result is not stored.
        stored = [job_id for job_id, cancel_requested in locked if cancel_requested is None]
        if held:
            JobResult.objects.bulk_create(
                [
                    JobResult(
                        job_id=job_id,
                        probabilities=by_id[job_id].probabilities,
                        provenance=by_id[job_id].provenance,
                        timings=by_id[job_id].timings,
                    )
                    for job_id in stored
                ]
            )
            updated = to_terminal(
                _held(held, batch.claim_token), transition=Transition.STORE, status=JobStatus.SUCCEEDED
            )
            if updated != len(held):  # rows are locked: this would be a bug, never a race
                raise RuntimeError(f"ended {len(held)} jobs but updated {updated}")
    dropped = set(by_id) - set(held)
    if dropped:
        logger.warning(
            "event=results_dropped batch_id=%s job_ids=%s reason=claim_lost",
            batch.batch_id,
            ",".join(map(str, dropped)),
        )
    if len(stored) < len(held):
        logger.info(
            "event=results_discarded batch_id=%s job_ids=%s reason=cancelled",
            batch.batch_id,
            ",".join(str(i) for i in held if i not in stored),
        )
    return stored


def job_fail(*, job_id: uuid.UUID, claim_token: uuid.UUID, code: str, message: str) -> bool:
    """Fail one job held by this claim (its image cannot be run). False when the claim was lost."""
    return (
        to_terminal(
            _held([job_id], claim_token),
            transition=Transition.FAIL,
            status=JobStatus.FAILED,
            error_code=code,
            error_message=message,
            expected=1,
        )
        == 1
    )


def job_release(*, job_ids: list[uuid.UUID], claim_token: uuid.UUID, delay_seconds: float = 0.0) -> int:
    """Give claimed jobs back to the queue unrun (shutdown, a batch claimed ahead, an error of the
    infrastructure rather than the job's), undoing the attempt. `delay_seconds`: not claimable
    before then (the database or broker is given time to recover)."""
    delay = {"available_at": timezone.now() + timedelta(seconds=delay_seconds)} if delay_seconds > 0 else {}
    released = to_queue(
        _held(job_ids, claim_token),
        transition=Transition.RELEASE,
        expected=len(job_ids),
        attempts=F("attempts") - 1,
        started_at=None,
        **delay,
    )
    if released:
        wake_workers(job_ids)
    return released


def _backoff_seconds(attempts: int) -> float:
    return settings.RETRY_BACKOFF_SECONDS * (2 ** max(attempts - 1, 0))


def job_retry_later(*, job_ids: list[uuid.UUID], claim_token: uuid.UUID, code: str, message: str) -> dict:
    """After an error of the job's own (its image broke the model, a bug it triggers): back to
    the queue with exponential backoff, or FAILED once MAX_ATTEMPTS is reached. `message` is
    what the client reads: a sentence, never exception text. Errors of the infrastructure
    (database, broker) spend no attempt: the worker releases the jobs instead (job_release)."""
    now = timezone.now()
    held = _held(job_ids, claim_token)
    failed = to_terminal(
        held.filter(attempts__gte=settings.MAX_ATTEMPTS),
        transition=Transition.RETRY_LATER,
        status=JobStatus.FAILED,
        error_code=code,
        error_message=f"{message} It was tried {settings.MAX_ATTEMPTS} times.",
        now=now,
    )
    requeued = 0
    for attempts in sorted(set(held.values_list("attempts", flat=True))):
        requeued += to_queue(
            held.filter(attempts=attempts),
            transition=Transition.RETRY_LATER,
            error_code=code[:ERROR_CODE_MAX],
            error_message=message[:ERROR_MESSAGE_MAX],
            available_at=now + timedelta(seconds=_backoff_seconds(attempts)),
        )
    if requeued + failed < len(job_ids):
        logger.warning(
            "event=transition_guard_missed transition=retry_later expected=%d updated=%d",
            len(job_ids),
            requeued + failed,
        )
    return {"requeued": requeued, "failed": failed}

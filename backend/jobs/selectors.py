"""Reads. Views call these; they never build querysets themselves. What a client asks for is
scoped by its client here, never in a view."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, QuerySet, prefetch_related_objects
from django.utils import timezone

from backend.clients.models import Client
from backend.jobs import errors
from backend.jobs import reference as references
from backend.jobs.claim_order import waiting_cte, waiting_params
from backend.jobs.models import Job, JobResult, JobStatus, WorkerHeartbeat

_STATUS_BY_NAME = {s.label.replace(" ", "_"): s.value for s in JobStatus} | {
    s.value.lower(): s.value for s in JobStatus
}


def job_get(*, client: Client, job_id: str | uuid.UUID, with_webhooks: bool = False) -> Job:
    """The client's job. Another client's job is not found, exactly like an unknown id.
    with_webhooks: its deliveries and their attempts too (two queries, only when it has a callback)."""
    try:
        key = uuid.UUID(str(job_id))
    except ValueError as exc:
        raise errors.JobNotFound() from exc
    job = Job.objects.select_related("result").filter(client=client, id=key).first()
    if job is None:
        raise errors.JobNotFound()
    if with_webhooks and job.callback_url:
        prefetch_related_objects([job], "webhook_deliveries__attempt_log")
    return job


def parse_status(value: str) -> str:
    status = _STATUS_BY_NAME.get(value.strip().lower())
    if status is None:
        raise errors.InvalidFilter(
            "Unknown status filter.",
            details={"status": value, "allowed": sorted({s.label.replace(" ", "_") for s in JobStatus})},
        )
    return status


def job_list(*, client: Client, status: str | None = None, reference: str | None = None) -> QuerySet[Job]:
    """The client's jobs, newest first; by status, and by exact reference (its keyed hash: no row
    is opened to match; a malformed reference is 400 invalid_reference)."""
    qs = Job.objects.select_related("result").filter(client=client).order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=parse_status(status))
    if reference is not None:
        wanted = references.check(reference)
        if wanted is None:
            raise errors.InvalidReference(details={"field": "reference", "length": 0})
        qs = qs.filter(reference_hash=references.hash_of(wanted, client_id=str(client.id)))
    return qs


def live_workers() -> QuerySet[WorkerHeartbeat]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LIVE_SECONDS)
    return WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff).order_by("worker_id")


def job_status_counts() -> dict[str, int]:
    """Jobs per status label (queued, in progress, ...), every status present, one query."""
    found = dict(Job.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {s.label: found.get(s.value, 0) for s in JobStatus}


def live_job(*, client: Client, sha256: str, model_version: str) -> Job | None:
    """The client's job that answers for these bytes and this model (any status but FAILED or
    CANCELLED: those leave no result, and the bytes may be sent again)."""
    return (
        Job.objects.select_related("result")
        .exclude(status__in=JobStatus.ended_without_result())
        .filter(client=client, sha256=sha256, model_version=model_version)
        .first()
    )


def organisation_result(*, client: Client, sha256: str, model_version: str) -> JobResult | None:
    """A result another client of the caller's organisation has for these bytes and this model,
    when that organisation shares its inference cache; else None (the default)."""
    org_id = client.organisation_id
    if org_id is None:
        return None
    return (
        JobResult.objects.filter(
            job__client__organisation_id=org_id,
            job__client__organisation__share_inference_cache=True,
            job__status=JobStatus.SUCCEEDED,
            job__sha256=sha256,
            job__model_version=model_version,
        )
        .exclude(job__client=client)
        .order_by("created_at")
        .first()
    )


def queue_depth(
    *, model_version: str | None = None, client: Client | None = None, at_most: int | None = None
) -> int:
    """Queued jobs; with at_most, counted only up to it (a question of "as many as N?" then
    costs N rows read, not the whole queue: make capacity, docs/scaling.md)."""
    qs = Job.objects.filter(status=JobStatus.QUEUED)
    if model_version:
        qs = qs.filter(model_version=model_version)
    if client is not None:
        qs = qs.filter(client=client)
    if at_most is not None:
        return qs.order_by()[:at_most].count()
    return qs.count()


# What worker autoscaling scales on, written once: KEDA's PostgreSQL scaler runs this very text
# (deploy/k8s/base/worker-autoscaling.yaml; tests/deploy check the two are equal and count alike),
# and `manage.py queue_depth` prints it. Jobs that need a worker now or soon: queued (a retry's
# backoff included: claimable within seconds) and in progress (held by a worker; one whose lease
# lapsed needs a live worker's reaper, so a fleet scaled to zero comes back for it).
QUEUE_DEPTH_SQL = (
    f"SELECT count(*) FROM {Job._meta.db_table} "
    f"WHERE status IN ('{JobStatus.QUEUED.value}', '{JobStatus.IN_PROGRESS.value}')"
)


def scaling_queue_depth() -> int:
    """QUEUE_DEPTH_SQL's number: the jobs worker autoscaling sizes the fleet for."""
    with connection.cursor() as cursor:
        cursor.execute(QUEUE_DEPTH_SQL)
        return int(cursor.fetchone()[0])


def queued_jobs(*, waiting_seconds: float = 0.0, claimable_only: bool = False) -> QuerySet[Job]:
    """Queued jobs created more than waiting_seconds ago, oldest first; with claimable_only,
    not those waiting out a retry backoff."""
    now = timezone.now()
    qs = Job.objects.filter(status=JobStatus.QUEUED, created_at__lt=now - timedelta(seconds=waiting_seconds))
    if claimable_only:
        qs = qs.exclude(available_at__gt=now)
    return qs.order_by("created_at")


def expired_leases(*, now: datetime | None = None, older_than_seconds: float = 0.0) -> QuerySet[Job]:
    """Jobs in progress whose holder stopped renewing their lease (more than older_than_seconds ago)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=older_than_seconds)
    return Job.objects.filter(status=JobStatus.IN_PROGRESS, lease_expires_at__lt=cutoff)


def queue_state() -> dict:
    """What an operator needs at a glance: counts per status, the oldest queued job's age,
    expired leases waiting for the reaper, live workers."""
    now = timezone.now()
    counts = list(job_status_counts().items())
    oldest = queued_jobs().values_list("created_at", flat=True).first()
    return {
        "counts": counts,
        "oldest_queued_age": f"{(now - oldest).total_seconds():.0f} s" if oldest else None,
        "expired_leases": expired_leases(now=now).count(),
        "live_workers": live_workers().count(),
        "max_queue_depth": settings.MAX_QUEUE_DEPTH,
    }


def measured_throughput(*, model_version: str) -> tuple[int, float | None]:
    """(live workers serving this model version, the sum of their measured images per second).
    Each worker reports `images_per_second` in its heartbeat's info (an exponentially weighted
    throughput of its recent batches; before its first, its engine's benchmark). None: no live
    worker reports one."""
    workers, rate, _ = _live_throughput(model_version=model_version)
    return workers, rate


def _live_throughput(*, model_version: str) -> tuple[int, float | None, int]:
    """measured_throughput's two figures, and the largest batch a live worker runs (1 if unsaid)."""
    infos = list(live_workers().filter(model_version=model_version).values_list("info", flat=True))
    rates = [info.get("images_per_second") for info in infos]
    measured = [float(r) for r in rates if isinstance(r, int | float) and r > 0]
    sizes = [info.get("batch_max_size") for info in infos]
    batch = max([int(s) for s in sizes if isinstance(s, int) and s > 0] or [1])
    return len(infos), (round(sum(measured), 3) if measured else None), batch


def eta_seconds(*, ahead: int, workers: int, images_per_second: float, batch: int = 1) -> float:
    """When a job with `ahead` jobs before it is done: a job ends with its batch, so the jobs up to
    its own are counted in whole rounds of every live worker's batch (workers x batch images, each
    round taking that many images' time at the measured rate)."""
    per_round = max(1, workers) * max(1, batch)
    rounds = -(-(ahead + 1) // per_round)  # ceil
    return round(rounds * per_round / images_per_second, 1)


def queue_standing(job: Job) -> dict | None:
    """Where a queued job stands: how many jobs the claim order puts before it, the live workers
    serving its model and their measured throughput (heartbeats), and so an estimate of when it
    will be done: (jobs ahead + 1) / images per second, in whole batches (eta_seconds). With no live worker, state `no_worker`
    and no estimate (a number would be a guess). None for a job that is not waiting to be
    claimed (in progress, ended, or in a retry's backoff). One query over the queue (the claim's
    own ranking), so it is asked for one job at a time."""
    if job.status != JobStatus.QUEUED:
        return None
    now = timezone.now()
    sql = (
        "WITH "
        + waiting_cte()
        + """
SELECT count(*), (SELECT count(*) FROM waiting WHERE id = %s)
FROM waiting w JOIN waiting me ON me.id = %s
WHERE w.urgency < me.urgency
   OR (w.urgency = me.urgency AND (w.turn < me.turn OR (w.turn = me.turn AND w.created_at < me.created_at)))"""
    )
    job_id = Job._meta.pk.get_db_prep_value(job.id, connection)
    params = [*waiting_params(model_version=job.model_version, now=now), job_id, job_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ahead, present = cursor.fetchone()
    if not present:
        return None
    window = settings.ETA_WINDOW_SECONDS
    done = Job.objects.filter(
        status=JobStatus.SUCCEEDED,
        model_version=job.model_version,
        finished_at__gte=now - timedelta(seconds=window),
    ).count()
    rate = done / window
    workers, images_per_second, batch = _live_throughput(model_version=job.model_version)
    if not workers:
        eta = None
    elif images_per_second:
        eta = eta_seconds(ahead=ahead, workers=workers, images_per_second=images_per_second, batch=batch)
    else:  # live workers of an older release, which report no throughput: the recent rate
        eta = round((ahead + 1) / rate, 1) if rate > 0 else None
    return {
        "jobs_ahead": ahead,
        "workers": workers,
        "images_per_second": images_per_second,
        "eta_seconds": eta,
        "state": "waiting" if workers else "no_worker",
        # Kept for compatibility (clients read it): jobs of this model finished lately, per second.
        "finished_per_second": round(rate, 3),
    }

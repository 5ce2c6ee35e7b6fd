"""The dashboard's figures: read-only, each a bounded aggregate query (no loop over the job table).

jobs by status                  GROUP BY status over the table (the claim index leads with status)
queue by client and priority    GROUP BY status, priority, client over QUEUED and IN_PROGRESS rows only
throughput per minute           jobs that ended SUCCEEDED or FAILED in the last hour (job_finished_at_idx,
                                this app's migration), GROUP BY minute and status
latency p50 / p95 per 5 min     succeeded jobs a worker ran that ended in the last hour, finished_at -
                                created_at: percentile_cont in PostgreSQL; elsewhere (SQLite) the
                                latest LATENCY_SAMPLE_MAX of those rows' two timestamps, sorted here
failures by error code          FAILED in the last hour, GROUP BY error_code; the last FAILURE_EXAMPLES
cache-hit ratio                 the audit log's job.created vs job.deduplicated events of the last hour
                                (AuditEvent.at and .action are indexed): one event per upload through
                                POST /api/v1/jobs and the web client; batch uploads are not counted
                                (their event, batch.created, does not say which images were cache hits)
worker heartbeats               the freshest MAX_WORKERS heartbeat rows
webhooks                        deliveries GROUP BY status (the due index leads with status); outcomes of
                                the latest METRICS_WEBHOOK_ATTEMPTS_WINDOW attempts by primary key, as
                                /metrics classifies them (backend/webhooks/outcomes.attempt_outcome)
DICOM instances not scored      GROUP BY reason over the kept rows (all, and last received in the last
                                hour: an index on last_received_at) and the tally by reason
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min
from django.db.models.functions import TruncMinute
from django.utils import timezone

from backend.audit.models import AuditEvent
from backend.dicomnet import selectors as dicomnet_selectors
from backend.dicomnet.models import UnscoredReason
from backend.jobs import selectors as job_selectors
from backend.jobs.models import Job, JobStatus, Priority, WorkerHeartbeat
from backend.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from backend.webhooks.outcomes import ATTEMPT_OUTCOMES, attempt_outcome

WINDOW = timedelta(hours=1)
THROUGHPUT_BUCKET = timedelta(minutes=1)
LATENCY_BUCKET = timedelta(minutes=5)
# Where the database has no percentile aggregate (SQLite): at most this many durations are read.
LATENCY_SAMPLE_MAX = 20_000
FAILURE_CODES_MAX = 20
FAILURE_EXAMPLES = 8
FAILURE_MESSAGE_CHARS = 200
MAX_WORKERS = 50
# Queue rows shown: the clients with most jobs waiting or running; the rest summed as "other".
QUEUE_CLIENTS_MAX = 20
OTHER_CLIENTS = "other"
WEBHOOK_RECENT = 8
ENDED_BY_WORK = (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class Buckets:
    """The time axis of a chart: `count` buckets of `size`, the last one holding `now`."""

    start: datetime
    size: timedelta
    count: int

    @classmethod
    def ending(cls, now: datetime, size: timedelta, window: timedelta = WINDOW) -> Buckets:
        seconds = size.total_seconds()
        floor = datetime.fromtimestamp(math.floor(now.timestamp() / seconds) * seconds, tz=now.tzinfo)
        count = int(window / size)
        return cls(start=floor - size * (count - 1), size=size, count=count)

    @property
    def times(self) -> list[datetime]:
        return [self.start + self.size * i for i in range(self.count)]

    def index(self, at: datetime) -> int | None:
        i = math.floor((at - self.start) / self.size)
        return i if 0 <= i < self.count else None


def job_counts() -> list[tuple[str, int]]:
    return list(job_selectors.job_status_counts().items())


def queue_by_client(*, now: datetime) -> dict:
    """Queued and in-progress jobs by client and priority, the oldest queued job's age each, and
    the totals by priority. One GROUP BY over the queue's rows only."""
    rows = list(
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.IN_PROGRESS])
        .order_by()
        .values_list("client__name", "priority", "status")
        .annotate(n=Count("*"), oldest=Min("created_at"))
    )
    totals: Counter[str] = Counter()
    for name, _priority, _status, n, _oldest in rows:
        totals[name] += n
    kept = {name for name, _ in totals.most_common(QUEUE_CLIENTS_MAX)}
    table: dict[tuple[str, str], dict] = {}
    by_priority = {p.label: {"queued": 0, "in_progress": 0} for p in Priority}
    for name, priority, status, n, oldest in rows:
        label = Priority(priority).label
        key = (name if name in kept else OTHER_CLIENTS, label)
        row = table.setdefault(
            key, {"client": key[0], "priority": label, "queued": 0, "in_progress": 0, "oldest_s": None}
        )
        column = "queued" if status == JobStatus.QUEUED else "in_progress"
        row[column] += n
        by_priority[label][column] += n
        if status == JobStatus.QUEUED:
            age = max((now - oldest).total_seconds(), 0.0)
            row["oldest_s"] = max(row["oldest_s"] or 0.0, age)
    ordered = sorted(
        table.values(),
        key=lambda r: (r["client"] == OTHER_CLIENTS, -(r["queued"] + r["in_progress"]), r["client"]),
    )
    return {"rows": ordered, "by_priority": by_priority}


def throughput(*, now: datetime) -> dict:
    """Jobs that ended SUCCEEDED or FAILED per minute over the last hour."""
    axis = Buckets.ending(now, THROUGHPUT_BUCKET)
    rows = (
        Job.objects.filter(finished_at__gte=axis.start, status__in=ENDED_BY_WORK)
        .order_by()
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute", "status")
        .annotate(n=Count("*"))
    )
    series = {status: [0] * axis.count for status in ENDED_BY_WORK}
    for minute, status, n in rows:
        i = axis.index(minute)
        if i is not None:
            series[status][i] += n
    succeeded, failed = series[JobStatus.SUCCEEDED], series[JobStatus.FAILED]
    total = sum(succeeded) + sum(failed)
    minutes = WINDOW.total_seconds() / 60
    return {
        "axis": axis,
        "succeeded": succeeded,
        "failed": failed,
        "total": total,
        "per_minute": round(total / minutes, 2),
    }


def _percentile(ordered: list[float], p: float) -> float:
    """As PostgreSQL's percentile_cont: linear between the two nearest ranks."""
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _latency_postgresql(axis: Buckets) -> tuple[dict[int, tuple[int, float, float]], tuple | None]:
    table = Job._meta.db_table
    duration = "extract(epoch FROM finished_at - created_at) * 1000"
    where = "status = %s AND started_at IS NOT NULL AND finished_at >= %s"
    pcts = (
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {duration}), "
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {duration})"
    )
    size = axis.size.total_seconds()
    start = axis.start.timestamp()
    params = [JobStatus.SUCCEEDED.value, axis.start]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT floor((extract(epoch FROM finished_at) - %s) / %s)::int AS bucket, count(*), {pcts} "
            f"FROM {table} WHERE {where} GROUP BY 1 ORDER BY 1",
            [start, size, *params],
        )
        buckets = {int(b): (n, float(p50), float(p95)) for b, n, p50, p95 in cursor.fetchall()}
        cursor.execute(f"SELECT count(*), {pcts} FROM {table} WHERE {where}", params)
        n, p50, p95 = cursor.fetchone()
    return buckets, (n, float(p50), float(p95)) if n else None


def _latency_sampled(axis: Buckets) -> tuple[dict[int, tuple[int, float, float]], tuple | None]:
    rows = (
        Job.objects.filter(status=JobStatus.SUCCEEDED, started_at__isnull=False, finished_at__gte=axis.start)
        .order_by("-finished_at")
        .values_list("created_at", "finished_at")[:LATENCY_SAMPLE_MAX]
    )
    grouped: dict[int, list[float]] = {}
    every: list[float] = []
    for created, finished in rows:
        i = axis.index(finished)
        if i is None:
            continue
        ms = (finished - created).total_seconds() * 1000
        grouped.setdefault(i, []).append(ms)
        every.append(ms)
    buckets = {}
    for i, values in grouped.items():
        values.sort()
        buckets[i] = (len(values), _percentile(values, 0.5), _percentile(values, 0.95))
    every.sort()
    overall = (len(every), _percentile(every, 0.5), _percentile(every, 0.95)) if every else None
    return buckets, overall


def latency(*, now: datetime) -> dict:
    """End-to-end latency (upload to result) of succeeded jobs that ended in the last hour: p50 and
    p95 per LATENCY_BUCKET, and over the hour. Only jobs a worker ran (cache hits answered at
    upload are not latency)."""
    axis = Buckets.ending(now, LATENCY_BUCKET)
    if connection.vendor == "postgresql":
        buckets, overall = _latency_postgresql(axis)
    else:
        buckets, overall = _latency_sampled(axis)
    p50 = [round(buckets[i][1], 1) if i in buckets else None for i in range(axis.count)]
    p95 = [round(buckets[i][2], 1) if i in buckets else None for i in range(axis.count)]
    counts = [buckets[i][0] if i in buckets else 0 for i in range(axis.count)]
    return {
        "axis": axis,
        "p50": p50,
        "p95": p95,
        "counts": counts,
        "jobs": overall[0] if overall else 0,
        "p50_ms": round(overall[1], 1) if overall else None,
        "p95_ms": round(overall[2], 1) if overall else None,
    }


def failures(*, now: datetime) -> dict:
    since = now - WINDOW
    failed = Job.objects.filter(status=JobStatus.FAILED, finished_at__gte=since)
    codes = list(
        failed.order_by()
        .values("error_code")
        .annotate(n=Count("*"), last=Max("finished_at"))
        .order_by("-n", "error_code")[:FAILURE_CODES_MAX]
    )
    examples = list(
        failed.order_by("-finished_at").values(
            "id", "finished_at", "error_code", "error_message", "client__name"
        )[:FAILURE_EXAMPLES]
    )
    for example in examples:
        message = example["error_message"]
        if len(message) > FAILURE_MESSAGE_CHARS:
            example["error_message"] = message[: FAILURE_MESSAGE_CHARS - 1] + "…"
    return {"codes": codes, "examples": examples, "total": sum(c["n"] for c in codes)}


def cache_hits(*, now: datetime) -> dict:
    counts = dict(
        AuditEvent.objects.filter(at__gte=now - WINDOW, action__in=["job.created", "job.deduplicated"])
        .order_by()
        .values_list("action")
        .annotate(n=Count("*"))
    )
    created, hits = counts.get("job.created", 0), counts.get("job.deduplicated", 0)
    uploads = created + hits
    return {
        "uploads": uploads,
        "hits": hits,
        "misses": created,
        "ratio": hits / uploads if uploads else None,
    }


def workers(*, now: datetime) -> list[dict]:
    rows = []
    for beat in WorkerHeartbeat.objects.order_by("-last_seen_at")[:MAX_WORKERS]:
        info = beat.info or {}
        age = max((now - beat.last_seen_at).total_seconds(), 0.0)
        rows.append(
            {
                "worker_id": beat.worker_id,
                "hostname": beat.hostname,
                "pid": beat.pid,
                "model_version": beat.model_version,
                "backend": info.get("backend") or "—",
                "precision": info.get("precision") or "—",
                "weights": info.get("weights") or "—",
                "threads": info.get("threads"),
                "batch_max_size": info.get("batch_max_size"),
                "started_at": beat.started_at,
                "age_s": age,
                "live": age <= settings.WORKER_LIVE_SECONDS,
            }
        )
    return rows


def webhooks(*, now: datetime) -> dict:
    found = dict(WebhookDelivery.objects.order_by().values_list("status").annotate(n=Count("*")))
    deliveries = [(status.label, found.get(status.value, 0)) for status in DeliveryStatus]
    window = max(settings.METRICS_WEBHOOK_ATTEMPTS_WINDOW, 0)
    latest = list(
        WebhookAttempt.objects.order_by("-pk").values_list(
            "response_code", "error", "started_at", "duration_ms", "delivery__job_id"
        )[:window]
    )
    since = now - WINDOW
    overall: Counter[str] = Counter()
    last_hour: Counter[str] = Counter()
    for code, error, started, _ms, _job in latest:
        outcome = attempt_outcome(code, error)
        overall[outcome] += 1
        if started >= since:
            last_hour[outcome] += 1
    recent = [
        {
            "job_id": job_id,
            "started_at": started,
            "outcome": attempt_outcome(code, error),
            "response_code": code,
            "error": error,
            "duration_ms": ms,
        }
        for code, error, started, ms, job_id in latest[:WEBHOOK_RECENT]
    ]
    outcomes = [(o, overall.get(o, 0), last_hour.get(o, 0)) for o in ATTEMPT_OUTCOMES if overall.get(o)]
    return {
        "deliveries": deliveries,
        "outcomes": outcomes,
        "window": window,
        "attempts": len(latest),
        "recent": recent,
    }


def dicom_unscored(*, now: datetime) -> list[dict]:
    """DICOM instances accepted but not scored, by reason: in the last hour, kept (within
    CXRQ_DICOM_UNSCORED_RETENTION_DAYS), and since the database was made. Three small queries."""
    recent = dicomnet_selectors.unscored_counts(since=now - WINDOW)
    kept = dicomnet_selectors.unscored_counts()
    total = dicomnet_selectors.unscored_tally()
    return [
        {
            "reason": reason,
            "label": label,
            "recent": recent[reason],
            "kept": kept[reason],
            "total": total[reason],
        }
        for reason, label in UnscoredReason.choices
    ]


def dashboard(*, now: datetime | None = None) -> dict:
    """Everything the page shows, at one instant."""
    now = now or timezone.now()
    return {
        "now": now,
        "window_minutes": int(WINDOW.total_seconds() // 60),
        "job_counts": job_counts(),
        "queue": queue_by_client(now=now),
        "throughput": throughput(now=now),
        "latency": latency(now=now),
        "failures": failures(now=now),
        "cache": cache_hits(now=now),
        "workers": workers(now=now),
        "webhooks": webhooks(now=now),
        "dicom_unscored": dicom_unscored(now=now),
    }

"""The worker registry: each worker process reports in (health reads it) and signs off."""

from __future__ import annotations

from django.utils import timezone

from backend.jobs.models import WorkerHeartbeat


def worker_heartbeat(*, worker_id: str, hostname: str, pid: int, model_version: str, info: dict) -> None:
    now = timezone.now()
    fields = {
        "hostname": hostname,
        "pid": pid,
        "model_version": model_version,
        "info": info,
        "last_seen_at": now,
    }
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id, defaults=fields, create_defaults=fields | {"started_at": now}
    )


def worker_signoff(*, worker_id: str) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()

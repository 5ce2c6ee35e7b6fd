"""Webhook deliveries: scheduled when a job ends, attempted by the dispatcher, retried with backoff.

- `schedule`: inside the transaction that ends the jobs (services/transitions.to_terminal), one
  bulk INSERT of deliveries; their wake-ups go to the broker after commit. No network here:
  inference and the database transaction never wait on a receiver.
- `attempt`: one attempt of one delivery, in the dispatcher (`manage.py run_dispatcher`, a Celery
  worker on WEBHOOK_QUEUE with a thread pool). Claimed by a guarded UPDATE, so a duplicated
  message never sends twice at once; recorded as a WebhookAttempt (status code or error,
  duration); then delivered (2xx), refused (the target is not allowed), due again after a
  backoff, or given up (past WEBHOOK_GIVE_UP_SECONDS since the job ended).
- `sweep`: deliveries overdue (a lost message, a restart) get a new wake-up.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.core import deliveries
from backend.core.exceptions import ApplicationError
from backend.jobs.models import Job, JobStatus
from backend.webhooks import signing, targets
from backend.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

DELIVER_TASK = "cxrq.deliver_webhook"
USER_AGENT = "cxrq-webhooks/1"
# An attempt whose claim is older than this is taken to have died with its dispatcher.
_CLAIM_STALE_SECONDS = 60.0


def event_for(status: str) -> str:
    return f"job.{str(status).lower()}"


def schedule(jobs: Iterable[tuple[uuid.UUID, str]], *, status: str) -> list[uuid.UUID]:
    """One delivery per (job id, callback_url) with a URL; wake-ups sent after commit."""
    now = timezone.now()
    rows = [
        WebhookDelivery(job_id=job_id, url=url, event=event_for(status), next_attempt_at=now)
        for job_id, url in jobs
        if url
    ]
    if not rows:
        return []
    WebhookDelivery.objects.bulk_create(rows)
    ids = [d.id for d in rows]
    transaction.on_commit(lambda: send_wakeups(ids))
    return ids


def send_wakeups(delivery_ids: Iterable[uuid.UUID | str], *, countdown: float = 0.0) -> int:
    """Ask the dispatcher to attempt these deliveries (backend/core/deliveries.py)."""
    return deliveries.send_wakeups(
        DELIVER_TASK, delivery_ids, countdown=countdown, event="webhook_wakeup_failed"
    )


def backoff_seconds(attempts: int, *, base: float | None = None, maximum: float | None = None) -> float:
    """Before attempt `attempts + 1`: `base` (default RETRY_BASE) doubling per attempt, at most
    `maximum` (default RETRY_MAX), +-10%. The PACS deliveries use it with their own settings."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS if base is None else base
    maximum = settings.WEBHOOK_RETRY_MAX_SECONDS if maximum is None else maximum
    return min(base * 2 ** max(attempts - 1, 0), maximum) * random.uniform(0.9, 1.1)


def _claim(delivery_id: str) -> WebhookDelivery | None:
    now = timezone.now()
    stale = now - timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + _CLAIM_STALE_SECONDS)
    due_by = now + timedelta(seconds=1)
    pending = DeliveryStatus.PENDING
    if not deliveries.claim(
        WebhookDelivery, delivery_id, pending=pending, now=now, stale_before=stale, due_by=due_by
    ):
        return None
    return WebhookDelivery.objects.select_related("job__client", "job__result").get(id=delivery_id)


def payload_for(job: Job) -> bytes:
    """The job as GET /api/v1/jobs/{id} shows it (without the delivery log itself); for a client
    whose format is fhir, its FHIR DiagnosticReport instead. Payloads rest in the database for the
    retries, so the FHIR one carries no return-path PHI (GET /api/v1/jobs/{id}/fhir does)."""
    from backend.jobs.serializers import JobOutputSerializer

    if job.client.webhook_payload_format == "fhir":
        from backend.interop import fhir

        if job.status == JobStatus.SUCCEEDED:
            return fhir.to_json(fhir.build_diagnostic_report(job=job, return_path=None))
        return fhir.to_json(fhir.build_unavailable_report(job=job))
    body = dict(JobOutputSerializer(job).data)
    body.pop("reference", None)  # sealed at rest (backend/jobs/reference.py): not in a stored payload
    return json.dumps(body, separators=(",", ":")).encode()


def attempt(delivery_id: str) -> str | None:
    """Run one attempt if the delivery is due and nobody else holds it; its status after, or None."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    job, client = delivery.job, delivery.job.client
    if delivery.payload is None:
        delivery.payload = payload_for(job)
        WebhookDelivery.objects.filter(id=delivery.id).update(payload=delivery.payload)
    body = bytes(delivery.payload)
    started, clock = timezone.now(), time.perf_counter()
    code, error = None, ""
    try:
        target = targets.resolve(delivery.url, allowed_hosts=client.webhook_allowed_hosts)
    except (targets.TargetRefused, ApplicationError) as exc:
        return _finish(delivery, started, clock, None, f"refused: {exc}"[:255], final=DeliveryStatus.REFUSED)
    except (socket.gaierror, UnicodeError) as exc:
        error = f"dns_error: {exc}"[:255]
    else:
        code, error = _post(
            target, body, signing.headers(client.webhook_secret, msg_id=str(delivery.id), body=body)
        )
    if code is not None and 200 <= code < 300:
        return _finish(delivery, started, clock, code, "", final=DeliveryStatus.DELIVERED)
    return _finish(delivery, started, clock, code, error or f"http_{code}", final=None)


def _post(target: targets.Target, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    timeout = httpx.Timeout(settings.WEBHOOK_TIMEOUT_SECONDS)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    headers = headers | {"host": target.host_header, "user-agent": USER_AGENT}
    deadline = time.monotonic() + settings.WEBHOOK_TIMEOUT_SECONDS
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as http,
            http.stream(
                "POST", target.connect_url, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            # Read at most a little of the answer, within the same deadline: a receiver that
            # trickles its body cannot hold a dispatcher thread for longer.
            for _chunk in response.iter_raw(4096):
                if time.monotonic() > deadline or response.num_bytes_downloaded > 65536:
                    break
            return response.status_code, ""
    except httpx.TimeoutException:
        return None, "timeout"
    except httpx.ConnectError as exc:
        return None, f"connect_error: {exc}"[:255]
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:255]


def _finish(
    delivery: WebhookDelivery, started, clock: float, code: int | None, error: str, *, final: str | None
) -> str:
    duration_ms = (time.perf_counter() - clock) * 1000
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        started_at=started,
        duration_ms=round(duration_ms, 2),
        response_code=code,
        error=error[:255],
    )
    now = timezone.now()
    fields = {"attempt_started_at": None, "last_error": error[:255]}
    delay = 0.0
    if final is None:
        delay = backoff_seconds(delivery.attempts)
        ended = delivery.job.finished_at or delivery.created_at
        if now + timedelta(seconds=delay) > ended + timedelta(seconds=settings.WEBHOOK_GIVE_UP_SECONDS):
            final = DeliveryStatus.GAVE_UP
    if final is not None:
        fields |= {"status": final, "finished_at": now, "next_attempt_at": None}
    else:
        fields |= {"next_attempt_at": now + timedelta(seconds=delay)}
    WebhookDelivery.objects.filter(id=delivery.id, status=DeliveryStatus.PENDING).update(**fields)
    status = final or DeliveryStatus.PENDING
    logger.info(
        "event=webhook_attempt delivery_id=%s job_id=%s attempt=%d code=%s error=%s status=%s duration_ms=%.1f",
        delivery.id,
        delivery.job_id,
        delivery.attempts,
        code,
        error.split(":")[0] or "-",
        status,
        duration_ms,
    )
    if final is None:
        send_wakeups([delivery.id], countdown=delay)
    return status


def sweep() -> int:
    """Wake-ups again for deliveries due for longer than WEBHOOK_SWEEP_SECONDS with nobody on them."""
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.WEBHOOK_SWEEP_SECONDS)
    stale = now - timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + _CLAIM_STALE_SECONDS)
    ids = deliveries.overdue(
        WebhookDelivery, pending=DeliveryStatus.PENDING, due_before=overdue, stale_before=stale
    )
    if ids:
        logger.info("event=webhook_sweep overdue=%d", len(ids))
    return send_wakeups(ids)


def redeliver_for(job: Job, url: str) -> list[uuid.UUID]:
    """A job that had already ended, named again with a callback_url (a dedup hit): told at once."""
    if job.status not in JobStatus.ended() or job.status == JobStatus.DELETED:
        return []
    return schedule([(job.id, url)], status=job.status)

"""Results to PACS: destinations, and deliveries scheduled when a job succeeds, attempted by the
dispatcher, retried with backoff (the webhooks' pattern, backend/webhooks/services.py).

- `schedule`: inside the transaction that ends the jobs (backend/jobs/services/transitions.py
  `to_terminal`), one delivery per enabled destination of the job's client, for jobs that came
  over DICOM (a return path: the sender's study to file the SR in); their wake-ups go to the
  broker after commit. No network here.
- `attempt`: one attempt of one delivery, in the dispatcher (`manage.py run_dispatcher`). Claimed
  by a guarded UPDATE, so a duplicated message never sends twice at once; builds the SR (and the
  Secondary Capture where the destination asks) with the return path, sends them in one
  association (scu.py), records a PacsAttempt (DIMSE status or error, duration), then: delivered
  (and return_path_delivered), due again after a backoff, given up (past PACS_GIVE_UP_SECONDS
  since the job ended), or failed for good (the destination, return path or result is gone).
- `sweep`: deliveries overdue (a lost message, a restart) get a new wake-up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backend.clients.models import Client
from backend.core import deliveries
from backend.core.exceptions import ApplicationError
from backend.dicomnet.returnpath import return_path_delivered, return_path_for
from backend.jobs.models import Job, JobStatus
from backend.pacs.models import DicomDestination, PacsAttempt, PacsDelivery, PacsDeliveryStatus
from backend.pacs.outcomes import StoreOutcome
from backend.webhooks.services import backoff_seconds

logger = logging.getLogger(__name__)

DELIVER_TASK = "cxrq.deliver_pacs"
SWEEP_TASK = "cxrq.sweep_pacs"


class DestinationExists(ApplicationError):
    code = "dicom_destination_exists"
    status_code = 409
    default_message = "The client has a DICOM destination with this name."


class InvalidDestination(ApplicationError):
    code = "invalid_dicom_destination"
    status_code = 400
    default_message = "The DICOM destination is not valid."


# --- destinations -------------------------------------------------------------------------------


def destination_add(
    *,
    client: Client,
    name: str,
    ae_title: str,
    host: str,
    port: int,
    calling_ae_title: str = "",
    send_secondary_capture: bool = False,
    enabled: bool = True,
) -> DicomDestination:
    destination = DicomDestination(
        client=client,
        name=name.strip(),
        ae_title=ae_title.strip(),
        host=host.strip(),
        port=port,
        calling_ae_title=calling_ae_title.strip(),
        send_secondary_capture=send_secondary_capture,
        enabled=enabled,
    )
    try:
        destination.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise InvalidDestination(details=exc.message_dict) from None
    with transaction.atomic():
        if DicomDestination.objects.filter(client=client, name=destination.name).exists():
            raise DestinationExists(details={"name": destination.name})
        destination.save()
    logger.info(
        "event=dicom_destination_added client_id=%s destination=%s called_ae=%s",
        client.id,
        destination.name,
        destination.ae_title,
    )
    return destination


def destination_remove(*, client: Client, name: str) -> bool:
    """Its pending deliveries end failed; the finished ones stay as the record."""
    with transaction.atomic():
        destination = DicomDestination.objects.filter(client=client, name=name.strip()).first()
        if destination is None:
            return False
        PacsDelivery.objects.filter(destination=destination, status=PacsDeliveryStatus.PENDING).update(
            status=PacsDeliveryStatus.FAILED,
            finished_at=timezone.now(),
            next_attempt_at=None,
            last_error="destination_removed",
        )
        destination.delete()
    logger.info("event=dicom_destination_removed client_id=%s destination=%s", client.id, name.strip())
    return True


# --- scheduling ---------------------------------------------------------------------------------


def schedule(job_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Deliveries for these jobs where they succeeded, came over DICOM, and their client has
    enabled destinations; wake-ups after commit. Idempotent: a (job, destination) pair is
    scheduled once (a unique constraint), however often this is called for it."""
    ids = list(job_ids)
    if not ids:
        return []
    # One small read (the destinations table) when nobody has one, the common case.
    destinations = list(DicomDestination.objects.filter(enabled=True).values_list("id", "client_id", "name"))
    if not destinations:
        return []
    by_client: dict[int, list[tuple[int, str]]] = {}
    for dest_id, client_id, name in destinations:
        by_client.setdefault(client_id, []).append((dest_id, name))
    jobs = Job.objects.filter(
        id__in=ids, status=JobStatus.SUCCEEDED, client_id__in=list(by_client), return_path__isnull=False
    ).values_list("id", "client_id")
    now = timezone.now()
    rows = [
        PacsDelivery(job_id=job_id, destination_id=dest_id, destination_name=name, next_attempt_at=now)
        for job_id, client_id in jobs
        for dest_id, name in by_client[client_id]
    ]
    if not rows:
        return []
    PacsDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    # With ignore_conflicts some of these ids may not exist: their wake-up claims nothing.
    scheduled = [d.id for d in rows]
    transaction.on_commit(lambda: send_wakeups(scheduled))
    return scheduled


def send_wakeups(delivery_ids: Iterable[uuid.UUID | str], *, countdown: float = 0.0) -> int:
    """Ask the dispatcher to attempt these deliveries (backend/core/deliveries.py)."""
    return deliveries.send_wakeups(
        DELIVER_TASK, delivery_ids, countdown=countdown, event="pacs_wakeup_failed"
    )


# --- attempts -----------------------------------------------------------------------------------


def _claim_stale_seconds() -> float:
    """An attempt's claim older than this died with its dispatcher: connect, associate, two
    C-STOREs and the release each wait at most PACS_TIMEOUT_SECONDS, plus a margin."""
    return settings.PACS_TIMEOUT_SECONDS * 5 + 60.0


def _claim(delivery_id: str) -> PacsDelivery | None:
    now = timezone.now()
    stale = now - timedelta(seconds=_claim_stale_seconds())
    due_by = now + timedelta(seconds=1)
    pending = PacsDeliveryStatus.PENDING
    if not deliveries.claim(
        PacsDelivery, delivery_id, pending=pending, now=now, stale_before=stale, due_by=due_by
    ):
        return None
    return PacsDelivery.objects.select_related("job__client", "job__result", "destination").get(
        id=delivery_id
    )


def attempt(delivery_id: str) -> str | None:
    """Run one attempt if the delivery is due and nobody else holds it; its status after, or None."""
    try:
        uuid.UUID(str(delivery_id))
    except ValueError:
        return None
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    started, clock = timezone.now(), time.perf_counter()
    job, destination = delivery.job, delivery.destination
    if destination is None or not destination.enabled:
        reason = "destination_removed" if destination is None else "destination_disabled"
        return _finish(delivery, started, clock, StoreOutcome(0, None, reason), PacsDeliveryStatus.FAILED)
    if job.status != JobStatus.SUCCEEDED:
        outcome = StoreOutcome(0, None, f"no_result: the job is {job.status.lower()}")
        return _finish(delivery, started, clock, outcome, PacsDeliveryStatus.FAILED)
    return_path = return_path_for(job)
    if return_path is None:
        outcome = StoreOutcome(0, None, "no_return_path: deleted (retention) before delivery")
        return _finish(delivery, started, clock, outcome, PacsDeliveryStatus.FAILED)
    try:
        datasets = _datasets(job, return_path, secondary_capture=destination.send_secondary_capture)
        build_ms = (time.perf_counter() - clock) * 1000
    except ApplicationError as exc:
        outcome = StoreOutcome(0, None, f"build_error: {exc.code}")
        return _finish(delivery, started, clock, outcome, PacsDeliveryStatus.FAILED)
    except Exception as exc:  # noqa: BLE001 - recorded, never the text: it may quote the PHI
        outcome = StoreOutcome(0, None, f"build_error: {type(exc).__name__}")
        return _finish(delivery, started, clock, outcome, PacsDeliveryStatus.FAILED)
    from backend.pacs import scu  # pynetdicom: only the dispatcher needs it, not web or worker

    try:
        outcome = scu.store(
            datasets=datasets,
            host=destination.host,
            port=destination.port,
            called_ae_title=destination.ae_title,
            calling_ae_title=destination.calling_ae_title or settings.DICOM_AE_TITLE,
            timeout=settings.PACS_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - a network library's surprise: retried like a refusal
        outcome = StoreOutcome(0, None, f"other_error: {type(exc).__name__}")
    if outcome.ok:
        status = _finish(delivery, started, clock, outcome, PacsDeliveryStatus.DELIVERED, build_ms=build_ms)
        return_path_delivered(job=job)
        return status
    return _finish(delivery, started, clock, outcome, None, build_ms=build_ms)


def _datasets(job: Job, return_path, *, secondary_capture: bool) -> list:
    import io

    import pydicom

    from backend.interop.models import ReportKind
    from backend.interop.sr import build_secondary_capture
    from backend.interop.store import report_get

    # The SR the API serves for this job, built once by whichever asks first (interop/store.py).
    datasets = [pydicom.dcmread(io.BytesIO(report_get(job=job, kind=ReportKind.SR).body))]
    if secondary_capture:
        datasets.append(build_secondary_capture(job=job, return_path=return_path))
    return datasets


def _finish(
    delivery: PacsDelivery,
    started,
    clock: float,
    outcome: StoreOutcome,
    final: str | None,
    *,
    build_ms: float = 0.0,
) -> str:
    """Record the attempt (its duration: building the objects, then the association) and move the
    delivery on: to `final`, or due again after a backoff, or given up past the window."""
    duration_ms = (time.perf_counter() - clock) * 1000
    PacsAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        started_at=started,
        duration_ms=round(duration_ms, 2),
        dimse_status=outcome.dimse_status,
        error=outcome.error[:255],
        sent=outcome.stored,
    )
    now = timezone.now()
    fields = {"attempt_started_at": None, "last_error": outcome.error[:255]}
    delay = 0.0
    if final is None:
        delay = backoff_seconds(
            delivery.attempts, base=settings.PACS_RETRY_BASE_SECONDS, maximum=settings.PACS_RETRY_MAX_SECONDS
        )
        ended = delivery.job.finished_at or delivery.created_at
        if now + timedelta(seconds=delay) > ended + timedelta(seconds=settings.PACS_GIVE_UP_SECONDS):
            final = PacsDeliveryStatus.GAVE_UP
    if final is not None:
        fields |= {"status": final, "finished_at": now, "next_attempt_at": None}
    else:
        fields |= {"next_attempt_at": now + timedelta(seconds=delay)}
    PacsDelivery.objects.filter(id=delivery.id, status=PacsDeliveryStatus.PENDING).update(**fields)
    status = final or PacsDeliveryStatus.PENDING
    logger.info(
        "event=pacs_attempt delivery_id=%s job_id=%s destination=%s attempt=%d dimse_status=%s "
        "error=%s stored=%d status=%s duration_ms=%.1f build_ms=%.1f",
        delivery.id,
        delivery.job_id,
        delivery.destination_name,
        delivery.attempts,
        "-" if outcome.dimse_status is None else f"0x{outcome.dimse_status:04X}",
        outcome.error.split(":")[0] or "-",
        outcome.stored,
        status,
        duration_ms,
        build_ms,
    )
    if final is None:
        send_wakeups([delivery.id], countdown=delay)
    return status


def sweep() -> int:
    """Wake-ups again for deliveries due for longer than PACS_SWEEP_SECONDS with nobody on them."""
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.PACS_SWEEP_SECONDS)
    stale = now - timedelta(seconds=_claim_stale_seconds())
    ids = deliveries.overdue(
        PacsDelivery, pending=PacsDeliveryStatus.PENDING, due_before=overdue, stale_before=stale
    )
    if ids:
        logger.info("event=pacs_sweep overdue=%d", len(ids))
    return send_wakeups(ids)

"""What webhook deliveries (backend/webhooks/) and PACS deliveries (backend/pacs/) do alike: a
delivery row is attempted by the dispatcher, woken by a Celery message that carries its id, claimed
with one guarded UPDATE, and swept again when its wake-up was lost. Each app keeps its own model,
task, statuses and timeouts; the mechanism is written once, here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db.models import F, Model, Q

logger = logging.getLogger(__name__)

# How many overdue deliveries one sweep wakes up.
SWEEP_BATCH = 1000


def send_wakeups(task: str, delivery_ids: Iterable[uuid.UUID | str], *, countdown: float, event: str) -> int:
    """Ask the dispatcher to run `task` for each delivery. A failed send is logged (as `event`), not
    raised: the sweep sends it again."""
    from backend.celery_app import app

    sent = 0
    for delivery_id in delivery_ids:
        try:
            app.send_task(
                task,
                args=[str(delivery_id)],
                queue=settings.WEBHOOK_QUEUE,
                # RabbitMQ's delayed delivery refuses a countdown under a second; never sooner.
                countdown=max(countdown, 1.0) if countdown else None,
                retry=False,
            )
            sent += 1
        except Exception as exc:  # noqa: BLE001 - the broker is down: the sweep re-sends
            logger.warning("event=%s delivery_id=%s error=%r", event, delivery_id, exc)
    return sent


def _free(stale_before: datetime) -> Q:
    """Nobody is attempting it: never claimed, or claimed by a dispatcher that died."""
    return Q(attempt_started_at__isnull=True) | Q(attempt_started_at__lt=stale_before)


def claim(
    model: type[Model],
    delivery_id: str,
    *,
    pending: str,
    now: datetime,
    stale_before: datetime,
    due_by: datetime,
) -> bool:
    """Take the delivery for one attempt (guarded: a duplicated wake-up never attempts it twice at
    once); True when this caller has it."""
    claimable = model.objects.filter(
        _free(stale_before), id=delivery_id, status=pending, next_attempt_at__lte=due_by
    )
    return bool(claimable.update(attempt_started_at=now, attempts=F("attempts") + 1))


def overdue(model: type[Model], *, pending: str, due_before: datetime, stale_before: datetime) -> list:
    """Pending deliveries due before `due_before` that nobody is attempting (lost wake-ups)."""
    return list(
        model.objects.filter(
            _free(stale_before), status=pending, next_attempt_at__lte=due_before
        ).values_list("id", flat=True)[:SWEEP_BATCH]
    )

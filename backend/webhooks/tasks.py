"""The dispatcher's tasks (registered by backend/dispatcher.py, run by `manage.py run_dispatcher`).

Deliveries wait on the network, so the dispatcher is its own Celery worker with a thread pool on
WEBHOOK_QUEUE: a slow receiver never takes an inference worker's process. The periodic tasks
(the overdue-delivery sweep and the retention purge) run on the same queue, scheduled by the
dispatcher's embedded beat.
"""

from __future__ import annotations

from backend.celery_app import app
from backend.webhooks import services

SWEEP_TASK = "cxrq.sweep_webhooks"
PURGE_TASK = "cxrq.purge_expired"


@app.task(name=services.DELIVER_TASK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str | None:
    return services.attempt(delivery_id)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_webhooks() -> int:
    return services.sweep()


@app.task(name=PURGE_TASK, ignore_result=True)
def purge_expired() -> dict:
    from backend.jobs.services.deletion import purge_expired as purge

    return purge().as_dict()

"""The dispatcher's PACS tasks (registered by backend/dispatcher.py, run by `manage.py run_dispatcher`
on WEBHOOK_QUEUE with the webhook deliveries: both wait on the network, never on the CPU)."""

from __future__ import annotations

from backend.celery_app import app
from backend.interop import sr  # noqa: F401 - highdicom loaded at start, not in the first delivery
from backend.pacs import services


@app.task(name=services.DELIVER_TASK, ignore_result=True)
def deliver_pacs(delivery_id: str) -> str | None:
    return services.attempt(delivery_id)


@app.task(name=services.SWEEP_TASK, ignore_result=True)
def sweep_pacs() -> int:
    return services.sweep()

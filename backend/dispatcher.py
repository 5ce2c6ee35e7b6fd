"""The dispatcher's Celery app (`manage.py run_dispatcher`): webhook and PACS deliveries and the
periodic housekeeping (the overdue-delivery sweeps, the retention purge), on WEBHOOK_QUEUE.

Importing this module sets Django up and registers the tasks of backend/webhooks/tasks.py on the
one Celery app. It imports nothing of the worker (no torch): it is part of the backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")

import django

django.setup()

from django.conf import settings  # noqa: E402

from backend.celery_app import app  # noqa: E402
from backend.pacs import services as pacs  # noqa: E402
from backend.pacs import tasks as pacs_tasks  # noqa: E402, F401 - registers the PACS tasks
from backend.webhooks import tasks  # noqa: E402

app.conf.beat_schedule = {
    "sweep-webhooks": {
        "task": tasks.SWEEP_TASK,
        "schedule": settings.WEBHOOK_SWEEP_SECONDS,
        "options": {"queue": settings.WEBHOOK_QUEUE, "expires": settings.WEBHOOK_SWEEP_SECONDS},
    },
    "sweep-pacs": {
        "task": pacs.SWEEP_TASK,
        "schedule": settings.PACS_SWEEP_SECONDS,
        "options": {"queue": settings.WEBHOOK_QUEUE, "expires": settings.PACS_SWEEP_SECONDS},
    },
    "purge-expired": {
        "task": tasks.PURGE_TASK,
        "schedule": float(settings.PURGE_INTERVAL_SECONDS),
        "options": {"queue": settings.WEBHOOK_QUEUE, "expires": float(settings.PURGE_INTERVAL_SECONDS)},
    },
}

__all__ = ["app"]

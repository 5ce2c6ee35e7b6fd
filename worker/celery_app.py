"""The Celery app. Importing it never imports torch (the web process sends through it).

The broker carries wake-up calls only; job state is in the database, so the
settings below aim at "never lose a wake-up silently, never run one twice
at once" rather than at exactly-once delivery, which the claim query gives.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")

import django

django.setup()

from django.conf import settings  # noqa: E402

app = Celery("cxrq", include=["worker.tasks"])

_broker = settings.CELERY_BROKER_URL
_conf = {
    "broker_url": _broker,
    "task_ignore_result": True,
    "result_backend": None,
    "task_serializer": "json",
    "accept_content": ["json"],
    # A wake-up is acknowledged after it ran: a worker that dies mid-batch
    # leaves it for another worker. Duplicate wake-ups are harmless.
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    # Worker processes per `celery worker` (each loads its own model): the tuned value.
    "worker_concurrency": settings.WORKER_CONCURRENCY,
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
    "task_default_queue": settings.CELERY_QUEUE,
    # The web process must never block an upload on a dead broker.
    "broker_transport_options": {},
}
if _broker.startswith("filesystem://"):
    folder = settings.CELERY_BROKER_FS_DIR
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    _conf["broker_transport_options"] = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        # kombu's default is ./control in the working directory; keep it with the broker.
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
elif _broker.startswith(("redis://", "rediss://")):
    _conf["broker_transport_options"] = {
        # Above the longest batch: Redis redelivers unacked messages after this.
        "visibility_timeout": 3600,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
        "max_retries": 1,
    }
app.conf.update(_conf)

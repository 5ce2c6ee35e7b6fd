"""The worker's entry point for Celery (`celery -A worker.celery_app worker`, see worker/command.py).

The app itself is the backend's (backend/celery_app.py); importing this module
sets Django up and registers the worker's task on it. The tuned worker
concurrency applies unless CXRQ_WORKER_CONCURRENCY or --concurrency says otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")

import django
from celery.signals import after_setup_logger

django.setup()

from backend.celery_app import app  # noqa: E402
from backend.core.logging import withhold_dicom_values  # noqa: E402
from worker import metrics_server, tasks  # noqa: E402, F401 - registers the task on the app
from worker.runtime.tuned import engine_config  # noqa: E402

app.conf.worker_concurrency = engine_config().worker_concurrency
# In a worker's main process: the folder its pool's children count metrics in, made before
# anything imports prometheus_client and before the pool forks (worker/metrics_server.py).
metrics_server.prepare()

# Celery's worker replaces the root logger's handlers: they withhold DICOM values too.
after_setup_logger.connect(lambda logger, **_: withhold_dicom_values(logger.handlers), weak=False)

__all__ = ["app"]

"""The Celery app, configured from Django settings (namespace CELERY), as cookiecutter-django does.

The web process sends wake-ups through it by task name (backend/jobs/dispatch.py);
the worker (worker/celery_app.py) registers the task on this same app. Importing
it never imports torch or anything of the worker.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")

app = Celery("cxrq")
app.config_from_object("django.conf:settings", namespace="CELERY")

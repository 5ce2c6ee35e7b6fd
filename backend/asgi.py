"""The ASGI application every server runs: Django behind the edge (backend/edge/asgi.py)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
# Under ASGI each request's sync code runs in a thread of its own, so a persistent connection
# (CONN_MAX_AGE > 0) is one more PostgreSQL connection per request thread, never reused:
# "too many clients" within seconds of a burst. Django's advice: 0 here, and a pooler
# (PgBouncer) in front of PostgreSQL where connection set-up matters. Workers keep theirs.
os.environ["DATABASE_CONN_MAX_AGE"] = "0"
django_application = get_asgi_application()

from backend.edge.asgi import EdgeMiddleware  # noqa: E402 - settings must be configured first

application = EdgeMiddleware(django_application)

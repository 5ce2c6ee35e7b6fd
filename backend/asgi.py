"""The ASGI application every server runs: Django behind the edge (backend/edge/asgi.py)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
django_application = get_asgi_application()

from backend.edge.asgi import EdgeMiddleware  # noqa: E402 - settings must be configured first

application = EdgeMiddleware(django_application)

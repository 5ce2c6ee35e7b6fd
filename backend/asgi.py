"""The ASGI application every server runs: Django behind the edge (backend/edge/asgi.py).

Django runs as a WSGI application in a fixed pool of CXRQ_WEB_THREADS threads per process
(a2wsgi, the adapter uvicorn's documentation points to), not under Django's own ASGI handler:
that one gives every request a thread of its own, so each request paid a new database
connection (a persistent one would be one more PostgreSQL connection per request thread,
never reused: "too many clients" within seconds of a burst), and 200 concurrent reads ran
7x slower than on the threaded WSGI server (docs/operations.md). With a fixed pool, each
thread keeps its connection (CONN_MAX_AGE) and the edge hands it requests that have
arrived whole, so no thread ever waits on a client.
"""

import os

from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
wsgi_application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - configured by get_wsgi_application()

from backend.edge.asgi import EdgeMiddleware  # noqa: E402

application = EdgeMiddleware(WSGIMiddleware(wsgi_application, workers=settings.WEB_THREADS))

"""The one HTTP server, for `make run` and production: gunicorn managing uvicorn workers
(asyncio, HTTP/1.1 by h11) that run backend.asgi:application.

Why this model (docs/operations.md has the figures): an idle, slow or stalled
client costs a socket and a coroutine, not a thread, so a few hundred of them do
not stop health or uploads; Django runs in a fixed pool of threads
(backend/asgi.py) and is handed only requests that have arrived whole; long-poll
waits (the integration API) can be coroutines on the loop. gunicorn supervises
the processes (restarts, graceful reloads, signals).

    gunicorn -c python:backend.edge.server backend.asgi:application

Everything comes from settings (the environment): see EDGE_* and WEB_* there.
"""

from __future__ import annotations

import os
from typing import Any

import django
from uvicorn_worker import UvicornWorker


def uvicorn_kwargs() -> dict[str, Any]:
    """uvicorn's configuration from settings: the deadline protocol, limits, trusted proxies."""
    from django.conf import settings

    from backend.edge.protocol import PROTOCOLS, HeadBoundsMixin

    HeadBoundsMixin.header_timeout = settings.EDGE_HEADER_TIMEOUT_SECONDS
    HeadBoundsMixin.max_head_bytes = settings.EDGE_MAX_HEAD_BYTES
    return {
        "http": PROTOCOLS[settings.EDGE_HTTP],
        "loop": "uvloop",
        "lifespan": "off",
        "server_header": False,  # no "Server: uvicorn" (nor a version) to fingerprint
        "timeout_keep_alive": settings.EDGE_KEEPALIVE_SECONDS,
        "limit_concurrency": settings.EDGE_MAX_CONNECTIONS or None,
        "h11_max_incomplete_event_size": settings.EDGE_MAX_HEAD_BYTES,
        # X-Forwarded-For / -Proto only from these addresses; none by default.
        "proxy_headers": bool(settings.TRUSTED_PROXIES),
        "forwarded_allow_ips": ",".join(settings.TRUSTED_PROXIES) or "",
        "backlog": settings.WEB_BACKLOG,
    }


class EdgeUvicornWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
        django.setup()
        self.CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **uvicorn_kwargs()}
        super().__init__(*args, **kwargs)


# --- gunicorn's settings, when this module is its config (`-c python:backend.edge.server`) ---
def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


bind = os.environ.get("CXRQ_BIND", "0.0.0.0:8000")
workers = _env_int("CXRQ_WEB_WORKERS", min(4, os.cpu_count() or 1))
worker_class = "backend.edge.server.EdgeUvicornWorker"
backlog = _env_int("CXRQ_WEB_BACKLOG", 2048)
# A worker that stops answering gunicorn's heartbeat for this long is replaced (with uvicorn
# workers this is the event loop's liveness, not a request's duration).
timeout = _env_int("CXRQ_WEB_WORKER_TIMEOUT_SECONDS", 60)
graceful_timeout = _env_int("CXRQ_WEB_GRACEFUL_TIMEOUT_SECONDS", 30)
keepalive = _env_int("CXRQ_EDGE_KEEPALIVE_SECONDS", 5)
forwarded_allow_ips = os.environ.get("CXRQ_TRUSTED_PROXIES", "")
limit_request_line = 8190
limit_request_fields = 100
accesslog = None


def server_argv(bind: str, workers: int | None = None) -> list[str]:
    """The command line that serves the API: `make run`, the load test and tests use this one."""
    import sys

    argv = [sys.executable, "-m", "gunicorn", "-c", "python:backend.edge.server", "--bind", bind]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, "backend.asgi:application"]

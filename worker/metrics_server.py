"""The worker's metrics endpoint, served by Celery's main process on WORKER_METRICS_PORT.

Batches run in the prefork pool's children, which come and go (a crash, an orphan leaving); a
scrape of any one child would see its own batches only. So the children count in
prometheus_client's multiprocess files (worker/metrics.py) and the main process, which runs no
batch and outlives its children, sums the folder when scraped (backend/metrics/exporter.py):

  prepare()     (main process, when worker/celery_app.py is imported; before the checks Celery
                runs import prometheus_client, and before the pool forks)  make the folder
  worker_ready  (main process)  serve it on the port
  worker_shutdown               (after the pool has stopped) stop serving, remove the folder

Why not one port per child: the pool's children have no stable identity for a scraper to find.
Why not through the database: a histogram per batch would be a write per batch to read back.
Nothing here imports prometheus_client before the folder exists (it fixes its mode at import).
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from backend.metrics import multiprocess

logger = logging.getLogger(__name__)

_server = None


def prepare() -> None:
    """In the worker's main process only (multiprocess.prepare_worker checks); a no-op when a
    test or a shell imports the worker's Celery app."""
    if settings.WORKER_METRICS_PORT:
        multiprocess.prepare_worker()


@worker_ready.connect
def _serve(**_kwargs) -> None:
    global _server
    path = multiprocess.directory()
    if not settings.WORKER_METRICS_PORT or path is None or not multiprocess.owned_here():
        return
    from backend.metrics.exporter import MetricsServer

    server = MetricsServer(
        path=path, address=settings.WORKER_METRICS_ADDRESS, port=settings.WORKER_METRICS_PORT
    )
    try:
        server.start()
    except OSError as exc:  # the port is taken (another worker on this host): work goes on, unmeasured
        logger.error(
            "event=metrics_server_failed address=%s port=%d error=%r",
            settings.WORKER_METRICS_ADDRESS,
            settings.WORKER_METRICS_PORT,
            exc,
        )
        return
    _server = server
    logger.info("event=metrics_serving address=%s port=%d", server.address, server.port)


@worker_shutdown.connect
def _stop(**_kwargs) -> None:
    if _server is not None:
        _server.stop()
    path = multiprocess.directory()
    if path is not None and multiprocess.owned_here():
        multiprocess.remove_directory(path, os.getpid())  # else at exit (atexit), as a fallback

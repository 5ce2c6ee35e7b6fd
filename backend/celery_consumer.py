"""The Celery consumer of every cxrq worker (inference and dispatcher): Celery's own, with a message
whose body cannot be decoded dropped with one WARNING line (Celery logs it at CRITICAL with the
body). A wake-up carries ids only and the sweeper re-sends a lost one, so nothing is lost with it.

Chosen by CELERY_WORKER_CONSUMER (backend/settings/base.py); only worker processes import it.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

from backend.broker_transports import log_dropped


class TolerantConsumer(Consumer):
    def on_decode_error(self, message, exc):
        queue = (message.delivery_info or {}).get("routing_key") or "?"
        log_dropped(transport="body", queue=queue, reason=type(exc).__name__)
        message.ack()

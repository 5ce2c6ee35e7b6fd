"""Health: database, broker and workers, each checked with a short timeout.

Degraded (200, or 503 with ?strict=1) with a reason code for each problem:
database_unavailable (503 always), broker_unavailable, no_live_worker,
no_worker_for_model_version (workers are live, but none runs the model version
that uploads are queued for: its jobs would wait for ever), queue_over_depth, and
under `make run` (manage.py runstack) `<component>_process_down` (web, worker,
dispatcher, dicom) while runstack restarts a process of the stack that died.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.clients.authentication import ApiKeyAuthentication
from backend.clients.permissions import is_operator
from backend.jobs import selectors
from backend.jobs.model_identity import current_model_version
from backend.jobs.schema import HEALTH


def check_database() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "vendor": connection.vendor, "ms": round((time.perf_counter() - started) * 1000, 1)}


def check_broker() -> dict[str, Any]:
    from backend.celery_app import app

    started = time.perf_counter()
    transport = app.conf.broker_url.split("://", 1)[0]
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        return {"ok": False, "transport": transport, "error": type(exc).__name__}
    return {"ok": True, "transport": transport, "ms": round((time.perf_counter() - started) * 1000, 1)}


def check_workers() -> dict[str, Any]:
    try:
        workers = [
            {
                "id": w.worker_id,
                "model_version": w.model_version,
                "last_seen_at": w.last_seen_at.isoformat(),
                **{
                    k: w.info.get(k)
                    for k in (
                        "backend",
                        "precision",
                        "precision_requested",
                        "fast_guard",
                        "weights",
                        "batch_max_size",
                        "batch_max_wait_ms",
                    )
                },
            }
            for w in selectors.live_workers()
        ]
        depth = selectors.queue_depth()
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        return {"ok": False, "error": type(exc).__name__}
    serving = [w for w in workers if w["model_version"] == current_model_version()]
    return {
        "ok": bool(serving),
        "live": len(workers),
        "serving_model_version": len(serving),
        "workers": workers,
        "queue_depth": depth,
        "max_queue_depth": settings.MAX_QUEUE_DEPTH,
    }


def check_stack() -> dict[str, Any] | None:
    """The processes of `make run`, as runstack last wrote them (it restarts one that died):
    None when this web process was not started by runstack."""
    if not settings.RUNSTACK_STATE_FILE:
        return None
    try:
        state = json.loads(Path(settings.RUNSTACK_STATE_FILE).read_text())
        components = {name: c["state"] for name, c in state["components"].items()}
        restarts = {name: c["restarts"] for name, c in state["components"].items()}
        os.kill(int(state["pid"]), 0)  # runstack itself is still there to restart them
    except (OSError, ValueError, KeyError, TypeError):
        return {"ok": False, "error": "runstack_state_unavailable"}
    return {"ok": all(s == "up" for s in components.values()), "components": components, "restarts": restarts}


def degraded_reasons(db: dict, broker: dict, workers: dict, stack: dict | None = None) -> list[str]:
    reasons = []
    if stack is not None:
        reasons += [f"{name}_process_down" for name, s in stack.get("components", {}).items() if s != "up"]
    if not db["ok"]:
        reasons.append("database_unavailable")
    if not broker["ok"]:
        reasons.append("broker_unavailable")
    if db["ok"] and not workers.get("live"):
        reasons.append("no_live_worker")
    elif db["ok"] and not workers.get("serving_model_version"):
        reasons.append("no_worker_for_model_version")
    limit = settings.MAX_QUEUE_DEPTH
    if limit > 0 and workers.get("queue_depth", 0) >= limit:
        reasons.append("queue_over_depth")
    return reasons


class HealthApi(APIView):
    """200 while the API can serve (reads and cache hits need only the database),
    with status "degraded" and the reasons; 503 when the database is down.
    `?strict=1` (for monitoring) answers 503 on any degradation.

    Anyone may ask, and gets the status and reason codes. The figures (workers
    with their host:pid, database vendor, broker, queue depth, model version) are
    for operators: an operator key or a staff session."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(**HEALTH)
    def get(self, request: Request) -> Response:
        db = check_database()
        broker = check_broker()
        workers = check_workers() if db["ok"] else {"ok": False, "error": "database_unavailable"}
        stack = check_stack()
        reasons = degraded_reasons(db, broker, workers, stack)
        strict = request.query_params.get("strict") in ("1", "true", "yes")
        body = {
            "status": "ok" if not reasons else "degraded",
            "reasons": reasons,
            "database": db,
            "broker": broker,
            "workers": workers,
            **({"stack": stack} if stack is not None else {}),
            "model_version": current_model_version(),
            "limits": {
                "upload_max_bytes": settings.UPLOAD_MAX_BYTES,
                "image_max_pixels": settings.IMAGE_MAX_PIXELS,
            },
        }
        if not is_operator(request):
            body = {"status": body["status"], "reasons": reasons}
        # The database is required to serve anything; broker or workers down
        # still lets reads and cache hits work, so the API reports 200 degraded.
        return Response(body, status=503 if (not db["ok"] or (strict and reasons)) else 200)

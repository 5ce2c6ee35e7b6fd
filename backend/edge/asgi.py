"""The ASGI edge in front of Django: bodies are bounded in size and in time before Django reads them.

What it does for every HTTP request, before the application sees a byte of the body:
- `Content-Length` that is not a number: 400 `invalid_content_length`; more than the bound:
  413 `file_too_large` at once, without reading the body, and the connection is closed.
- The body is read here, on the event loop, into a spooled file (memory up to 2.5 MB, then
  disk), counted, and handed to Django whole: a chunked body gets its length (Django's
  parsers need one); past the bound: 413 and close. So Django's threads never wait on a client.
- The whole body must arrive within CXRQ_EDGE_BODY_TIMEOUT_SECONDS: a client that stops
  sending (or sends less than it declared) gets 408 `request_timeout` and the connection closes.
- The application must answer within CXRQ_EDGE_REQUEST_TIMEOUT_SECONDS: else 503
  `request_took_too_long` (and the connection closes).
The server (backend/edge/protocol.py) bounds the time to send the headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from typing import Any

from django.conf import settings

from backend.core.exception_handler import error_body
from backend.edge import waiting

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
# Multipart framing on top of the largest image.
MULTIPART_OVERHEAD = 64 * 1024


BATCHES_PATH = "/api/v1/batches"


def body_limit(path: str = "") -> int:
    """The largest body a request may send: one image's limit, or a batch's on POST /batches."""
    if path.rstrip("/") == BATCHES_PATH:
        return settings.BATCH_MAX_BYTES + MULTIPART_OVERHEAD
    return settings.UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD


def error_response_parts(code: str, message: str, details: dict | None = None) -> tuple[list, bytes]:
    """Headers and body of a response in the API's error shape, closing the connection."""
    body = json.dumps(error_body(code, message, details)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-content-type-options", b"nosniff"),
    ]
    return headers, body


async def _send_error(send, status: int, code: str, message: str, details: dict | None = None) -> None:
    headers, body = error_response_parts(code, message, details)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(code)
        self.response = (status, code, message, details)


class _BodyTimeout(_Refused):
    def __init__(self) -> None:
        super().__init__(
            408,
            "request_timeout",
            "The request body did not arrive in time.",
            {"timeout_seconds": settings.EDGE_BODY_TIMEOUT_SECONDS},
        )


def _too_large(limit: int, **details: int) -> _Refused:
    return _Refused(
        413,
        "file_too_large",
        "The body is larger than the upload limit.",
        {"max_bytes": limit - MULTIPART_OVERHEAD, **details},
    )


class EdgeMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            bounded_scope, bounded_receive = await self._bounded(scope, receive)
            handled = (
                waiting.respond(self.app, bounded_scope, bounded_receive, tracking_send)
                if waiting.wants_wait(bounded_scope)
                else self.app(bounded_scope, bounded_receive, tracking_send)
            )
            await asyncio.wait_for(handled, timeout=settings.EDGE_REQUEST_TIMEOUT_SECONDS or None)
        except TimeoutError:
            # The application took too long. Its thread cannot be stopped; its answer, when it
            # comes, goes nowhere. The client is told now, and may retry.
            logger.warning("event=request_timed_out path=%s", scope["path"][:200])
            if not started:
                await _send_error(
                    send,
                    503,
                    "request_took_too_long",
                    "The server took too long to answer; retry shortly.",
                    {"timeout_seconds": settings.EDGE_REQUEST_TIMEOUT_SECONDS},
                )
        except _Refused as refused:
            status, code, message, details = refused.response
            logger.info("event=request_refused status=%d code=%s at=edge", status, code)
            if not started:
                await _send_error(send, status, code, message, details)

    async def _bounded(self, scope: Scope, receive) -> tuple[Scope, Any]:
        """Read the whole body here, on the event loop, bounded in size and time; hand the
        application a receive() that gives it at once. So a thread of the application never
        waits on a client: it starts when the request has arrived whole."""
        headers = scope["headers"]
        lengths = [v for k, v in headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
        limit = body_limit(scope.get("path", ""))
        if lengths:
            raw = lengths[0].strip()
            if len(set(lengths)) > 1 or not raw.isdigit():
                raise _Refused(400, "invalid_content_length", "Content-Length must be one whole number.")
            declared = int(raw)
            if declared > limit:
                raise _too_large(limit, size=declared)
            if declared == 0:
                return scope, receive
        elif not chunked:
            return scope, receive  # no body
        spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)  # noqa: SIM115
        size, deadline = 0, time.monotonic() + settings.EDGE_BODY_TIMEOUT_SECONDS
        try:
            while True:
                message = await _before(receive, deadline)
                if message["type"] == "http.disconnect":
                    spool.close()
                    return scope, _replay_disconnect
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit, size_at_least=size)
                spool.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        # A chunked body is handed on with its length: Django's parsers need one.
        new_headers = [(k, v) for k, v in headers if k not in (b"transfer-encoding", b"content-length")]
        new_headers.append((b"content-length", str(size).encode()))
        return scope | {"headers": new_headers}, _replay(spool)


async def _before(receive, deadline: float) -> Message:
    try:
        return await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.001))
    except TimeoutError:
        raise _BodyTimeout() from None


async def _replay_disconnect() -> Message:
    return {"type": "http.disconnect"}


def _replay(spool, chunk_bytes: int = 64 * 1024):
    """The spooled body, 64 KiB a message (never the whole of a large upload in memory at once)."""

    async def receive() -> Message:
        if spool.closed:
            await asyncio.Event().wait()  # like a real connection: nothing more until it closes
        data = spool.read(chunk_bytes)
        more = len(data) == chunk_bytes and spool.tell() < _size(spool)
        if not more:
            spool.close()
        return {"type": "http.request", "body": data, "more_body": more}

    return receive


def _size(spool) -> int:
    here = spool.tell()
    end = spool.seek(0, 2)
    spool.seek(here)
    return end

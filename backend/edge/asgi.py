"""The ASGI edge in front of Django: bodies are bounded in size and in time before Django reads them.

What it does for every HTTP request, before the application sees a byte of the body:
- `Content-Length` that is not a number: 400 `invalid_content_length`; more than the bound:
  413 `file_too_large` at once, without reading the body, and the connection is closed.
- A chunked body (no `Content-Length`): read here, counted, and handed to Django with its
  length once complete (Django's parsers need one); past the bound: 413 and close.
- The whole body must arrive within CXRQ_EDGE_BODY_TIMEOUT_SECONDS: a client that stops
  sending (or sends less than it declared) gets 408 `request_timeout` and the connection closes.
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

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
# Multipart framing on top of the largest image.
MULTIPART_OVERHEAD = 64 * 1024


def body_limit() -> int:
    return settings.UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD


def error_response_parts(code: str, message: str, details: dict | None = None) -> tuple[list, bytes]:
    """Headers and body of a response in the API's error shape, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message, "details": details or {}}}).encode()
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
            await self.app(bounded_scope, bounded_receive, tracking_send)
        except _Refused as refused:
            status, code, message, details = refused.response
            logger.info("event=request_refused status=%d code=%s at=edge", status, code)
            if not started:
                await _send_error(send, status, code, message, details)

    async def _bounded(self, scope: Scope, receive) -> tuple[Scope, Any]:
        headers = scope["headers"]
        lengths = [v for k, v in headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
        limit = body_limit()
        deadline = time.monotonic() + settings.EDGE_BODY_TIMEOUT_SECONDS
        if lengths:
            raw = lengths[0].strip()
            if len(set(lengths)) > 1 or not raw.isdigit():
                raise _Refused(400, "invalid_content_length", "Content-Length must be one whole number.")
            declared = int(raw)
            if declared > limit:
                raise _Refused(
                    413,
                    "file_too_large",
                    "The body is larger than the upload limit.",
                    {"max_bytes": settings.UPLOAD_MAX_BYTES, "size": declared},
                )
            return scope, _timed(receive, deadline)
        if not chunked:
            return scope, _timed(receive, deadline)
        # Chunked: read it all here (bounded), then give Django a body with a length.
        spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)  # noqa: SIM115
        size, timed = 0, _timed(receive, deadline)
        while True:
            message = await timed()
            if message["type"] == "http.disconnect":
                return scope, _replay_disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                spool.close()
                raise _Refused(
                    413,
                    "file_too_large",
                    "The body is larger than the upload limit.",
                    {"max_bytes": settings.UPLOAD_MAX_BYTES, "size_at_least": size},
                )
            spool.write(chunk)
            if not message.get("more_body", False):
                break
        spool.seek(0)
        new_headers = [(k, v) for k, v in headers if k != b"transfer-encoding"]
        new_headers.append((b"content-length", str(size).encode()))
        return scope | {"headers": new_headers}, _replay(spool)


def _timed(receive, deadline: float):
    """receive() with a deadline on the body; once the body is complete, receive() as it is
    (Django then waits on it for a disconnect while the view runs, for as long as it runs)."""
    complete = False

    async def timed_receive() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise _BodyTimeout() from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return timed_receive


async def _replay_disconnect() -> Message:
    return {"type": "http.disconnect"}


def _replay(spool):
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # like a real connection: nothing more until it closes
        sent = True
        data = spool.read()
        spool.close()
        return {"type": "http.request", "body": data, "more_body": False}

    return receive

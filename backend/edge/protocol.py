"""uvicorn's HTTP/1.1 protocol with a deadline on the request head.

uvicorn bounds the idle time between requests (keep-alive) but not the time a
client takes to send a request line and headers: a client trickling one byte a
second holds its connection for ever (slowloris). Here every request head must
be complete within CXRQ_EDGE_HEADER_TIMEOUT_SECONDS of its first byte (or of the
connection, for a client that connects and says nothing); past it the client
gets 408 in the error shape and the connection closes. Bodies are bounded in
backend/edge/asgi.py, once the application is called.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.edge.asgi import error_response_parts

logger = logging.getLogger(__name__)


class DeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0  # set from settings by backend/edge/server.py

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_timer is None:
            self._arm()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        headers, body = error_response_parts(
            "request_timeout",
            "The request head did not arrive in time.",
            {"timeout_seconds": self.header_timeout},
        )
        head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()
        logger.info("event=request_refused status=408 code=request_timeout at=head")

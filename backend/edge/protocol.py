"""uvicorn's HTTP/1.1 protocols with a deadline and a size bound on the request head.

uvicorn bounds the idle time between requests (keep-alive) but not the time a
client takes to send a request line and headers: a client trickling one byte a
second holds its connection for ever (slowloris). Here every request head must
be complete within CXRQ_EDGE_HEADER_TIMEOUT_SECONDS of its first byte (or of the
connection, for a client that connects and says nothing), and within
CXRQ_EDGE_MAX_HEAD_BYTES; past either the client gets 408 / 431 in the error
shape and the connection closes. Bodies are bounded in backend/edge/asgi.py.

A request the parser refuses (a malformed Content-Length, two of them, Content-Length with
Transfer-Encoding, bare LF line ends, a NUL in the target, a method the parser does not know,
the HTTP/2 preface) gets 400 `bad_request` in the error shape too, and the connection closes:
uvicorn's own answer is text/plain. The parser does not say which rule the request broke, and
the answer does not guess; nothing after the bad bytes is read (request smuggling needs the
server to go on reading the connection).

Two parsers, one rule: httptools (llhttp, C; the default: the faster) and h11
(pure Python; CXRQ_EDGE_HTTP=h11).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backend.edge.asgi import error_response_parts

logger = logging.getLogger(__name__)

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeadBoundsMixin:
    header_timeout: float = 10.0  # set from settings by backend/edge/server.py
    max_head_bytes: int = 16 * 1024

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def _head_init(self) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False

    def _head_begin(self) -> None:
        """The first byte of a request head (or a new connection)."""
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_refuse, 408)

    def _head_end(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_refuse(self, status: int) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if status == 408:
            code, message = "request_timeout", "The request head did not arrive in time."
            details: dict = {"timeout_seconds": self.header_timeout}
        else:
            code, message = "request_head_too_large", "The request line and headers are too large."
            details = {"max_bytes": self.max_head_bytes}
        self._refuse(status, code, message, details)
        logger.info("event=request_refused status=%d code=%s at=head", status, code)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refused (`msg` is uvicorn's own words)."""
        self._head_end()
        if self.transport.is_closing():
            return
        self._refuse(
            400,
            "bad_request",
            "The request is not valid HTTP/1.1 (its request line, headers or framing); "
            "the connection is closed.",
            {},
        )
        logger.info("event=request_refused status=400 code=bad_request at=parse")

    def _refuse(self, status: int, code: str, message: str, details: dict) -> None:
        headers, body = error_response_parts(code, message, details)
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()
        self._in_head = False


class DeadlineHttpToolsProtocol(HeadBoundsMixin, HttpToolsProtocol):
    """The head's size is counted from the parser's own pieces (URL, names, values), so body
    bytes that arrive in the same packet are never taken for headers."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_init()
        super().connection_made(transport)
        self._head_begin()

    def data_received(self, data: bytes) -> None:
        if not self._in_head and self._idle():
            self._head_begin()
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._head_refuse(431)  # still incomplete, already too large

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_bytes > self.max_head_bytes:
            self._head_refuse(431)  # complete but too large: never reaches the application
            return
        self._head_end()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_end()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete


class DeadlineH11Protocol(HeadBoundsMixin, H11Protocol):
    """h11 bounds the head's size itself (h11_max_incomplete_event_size: 400)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_init()
        super().connection_made(transport)
        self._head_begin()

    def data_received(self, data: bytes) -> None:
        import h11

        if not self._in_head and self.conn.their_state is h11.IDLE:
            self._head_begin()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_end()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_end()
        super().connection_lost(exc)


PROTOCOLS = {"httptools": DeadlineHttpToolsProtocol, "h11": DeadlineH11Protocol}

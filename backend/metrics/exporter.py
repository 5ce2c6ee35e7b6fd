"""A small HTTP endpoint that serves one metrics folder: the worker's main process runs it
(worker/metrics_server.py) on WORKER_METRICS_PORT for the pool children's batches.

It answers GET /metrics only, to the same callers as the web's /metrics (access.py), and
anything else in the one error shape. A thread of the main process serves it, so it keeps
answering while every child is busy with a batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from backend.core.exception_handler import error_body
from backend.metrics import access

_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None  # one line per scrape on stderr is noise, not an event


class MetricsServer:
    def __init__(self, *, path: Path, address: str, port: int):
        self.path, self.address, self.port = path, address, port
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (raises OSError when the port is taken) and serve on a daemon thread."""
        self._httpd = make_server(self.address, self.port, self.app, _Server, _QuietHandler)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="cxrq-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
            return _error(start_response, 404, "not_found", "Not found: metrics are at /metrics.")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _error(
                start_response, 405, "method_not_allowed", "Only GET and HEAD.", {"Allow": "GET, HEAD"}
            )
        refusal = access.refusal(
            remote_addr=environ.get("REMOTE_ADDR", ""), authorization=environ.get("HTTP_AUTHORIZATION", "")
        )
        if refusal is not None:
            return _error(start_response, refusal.status, refusal.code, refusal.message, refusal.headers)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.path))
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        body = encoder(registry)
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]


def _error(
    start_response: Callable, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> list[bytes]:
    body = json.dumps(error_body(code, message)).encode()
    start_response(
        f"{status} {_REASONS[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or {}).items()],
    )
    return [body]

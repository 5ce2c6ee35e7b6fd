"""Log filters for what Django logs about requests that are the client's fault.

Django logs a request whose Host header is not in ALLOWED_HOSTS on `django.security.DisallowedHost`
at ERROR with the exception's traceback: about 1.3 KB of JSON per request that anyone can send
without a key, an unauthenticated way to fill the log and to page whoever watches ERRORs. It is
answered 400 in the error shape (backend/core/views.py bad_request) and is worth one WARNING line.
"""

from __future__ import annotations

import logging

MAX_HOST_CHARS = 100


class DisallowedHostFilter(logging.Filter):
    """Rewrites DisallowedHost records into one WARNING line, `event=disallowed_host host=...`,
    without a traceback. The host is the client's text: quoted (repr) and cut short, so it cannot
    forge fields or lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        host = _host_of(record, exc)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "event=disallowed_host host=%s status=400", (host,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _host_of(record: logging.LogRecord, exc: BaseException | None) -> str:
    request = getattr(record, "request", None)
    meta = getattr(request, "META", None) or {}
    host = meta.get("HTTP_HOST") or meta.get("SERVER_NAME") or ""
    if not host and exc is not None:
        host = str(exc)
    host = str(host)
    cut = host[:MAX_HOST_CHARS]
    return repr(cut) + ("…" if len(host) > MAX_HOST_CHARS else "")

"""One webhook attempt's outcome as a bounded label: its status class, or the kind of error.
Shared by /metrics (backend/metrics/collectors.py) and the operator dashboard; no metrics library
here, so that importing it never imports prometheus_client (which must come after the metrics
folder is chosen: backend/metrics/multiprocess.py)."""

from __future__ import annotations

ATTEMPT_ERRORS = ("timeout", "connect_error", "dns_error", "refused")
ATTEMPT_OUTCOMES = ("1xx", "2xx", "3xx", "4xx", "5xx", *ATTEMPT_ERRORS, "other_error")


def attempt_outcome(response_code: int | None, error: str) -> str:
    if response_code is not None:
        return f"{response_code // 100}xx" if 100 <= response_code < 600 else "other_error"
    kind = (error or "").split(":", 1)[0].strip()
    return kind if kind in ATTEMPT_ERRORS else "other_error"

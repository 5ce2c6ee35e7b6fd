"""The cxrq HTTP API as the CLI uses it: one httpx client, retries with backoff, errors as values.

Retried, with the same request (so with the same Idempotency-Key for an upload):
- 429 (`rate_limited`, `client_queue_full`) and 503 (`queue_full`, `database_unavailable`,
  `request_took_too_long`), and 409 `idempotency_key_busy`: after the server's `Retry-After`
  when it sends one, else after an exponential backoff; up to `retries` times;
- a connection that could not be made: quietly, for at most `connect_budget` seconds (3 s) and
  `connect_retries` times, then `Unreachable`: a server that is down fails fast, in one line;
- a connection that broke mid-request: up to `connect_retries` times, with backoff, each noted.
Anything else is an `ApiError` carrying the server's error code and message. Once the run is told to
stop (a fatal error in another thread, Ctrl-C), nothing is retried or noted any more: `Interrupted`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cxrq_cli import __version__

RETRY_STATUSES = frozenset({429, 503})
RETRY_CODES = frozenset({"idempotency_key_busy"})
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 300.0
CONNECT_BUDGET = 3.0  # seconds of retrying a connection that cannot be made
CONNECT_TIMEOUT = 5.0  # seconds one connection may take to be made


@dataclass
class ApiError(Exception):
    """The server refused a request: its HTTP status and its error's code, message and details."""

    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message} (HTTP {self.status})"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "details": self.details}

    @property
    def auth_refused(self) -> bool:
        return self.status in (401, 403)


class Unreachable(Exception):
    """No answer from the server: refused or broken connections, or timeouts, past the retries."""


class Interrupted(Exception):
    """The run was told to stop (Ctrl-C) while a request waited to be retried."""


def error_from_response(response: httpx.Response) -> ApiError:
    """The server's `{"error": {"code", "message", "details"}}`, or a stand-in for a body that is
    not one (an HTML page from a proxy, say)."""
    try:
        body = response.json()
        error = body["error"]
        return ApiError(
            status=response.status_code,
            code=str(error["code"]),
            message=str(error.get("message") or ""),
            details=error.get("details") if isinstance(error.get("details"), dict) else {},
        )
    except (ValueError, KeyError, TypeError):
        reason = response.reason_phrase or "error"
        return ApiError(status=response.status_code, code=f"http_{response.status_code}", message=reason)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds (only the delay-seconds form; cxrq never sends an HTTP date)."""
    raw = response.headers.get("Retry-After", "").strip()
    try:
        return min(max(float(raw), 0.0), RETRY_AFTER_MAX)
    except ValueError:
        return None


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter's upper half: 0.5 s, 1 s, 2 s, ... capped at 30 s."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Api:
    """The API under `base_url` with one key. Safe to share between threads (httpx.Client is)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        retries: int = 8,
        connect_retries: int = 3,
        connect_budget: float = CONNECT_BUDGET,
        on_retry: Callable[[str, float], None] | None = None,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalise_url(base_url)
        self.retries = retries
        self.connect_retries = connect_retries
        self.connect_budget = connect_budget
        self.on_retry = on_retry or (lambda _why, _delay: None)
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Api-Key {api_key}", "User-Agent": f"cxrq-cli/{__version__}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """Send, retrying what can be retried; a 2xx/3xx response, else ApiError / Unreachable."""
        timeout = httpx.Timeout(read_timeout or self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT))
        refusals = failures = 0
        first_failure: float | None = None
        waited = 0.0  # seconds slept between tries of a connection (monotonic time counts them too)
        while True:
            if self.stop.is_set():
                raise Interrupted()
            attempt_started = time.monotonic()
            try:
                response = self._http.request(
                    method, path, params=params, files=files, data=data, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                # Connection refused, reset, timed out: the request may or may not have arrived. A
                # retry is safe: uploads carry an Idempotency-Key, cancel and delete are idempotent.
                if self.stop.is_set():  # the client was closed under it: the run is over, say nothing
                    raise Interrupted() from None
                first_failure = attempt_started if first_failure is None else first_failure
                spent = max(time.monotonic() - first_failure, waited)
                delay = backoff(failures)
                never_connected = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if failures >= self.connect_retries or (
                    never_connected and spent + delay > self.connect_budget
                ):
                    tries = f" ({plural(failures + 1, 'try', 'tries')} in {spent:.1f} s)"
                    raise Unreachable(
                        f"{self.base_url}: {describe_transport_error(exc)}"
                        + (tries if never_connected else "")
                    ) from None
                failures += 1
                if not never_connected:  # a server that was there and broke off: worth a word
                    self.on_retry(f"{describe_transport_error(exc)}", delay)
                self._sleep(delay)
                waited += delay
                continue
            if response.status_code < 400:
                return response
            error = error_from_response(response)
            if (
                response.status_code in RETRY_STATUSES or error.code in RETRY_CODES
            ) and refusals < self.retries:
                delay = retry_after_seconds(response)
                delay = backoff(refusals) if delay is None else delay + random.uniform(0, 0.25)
                refusals += 1
                if not self.stop.is_set():
                    self.on_retry(f"{error.code} (HTTP {error.status})", delay)
                self._sleep(delay)
                continue
            raise error

    # --- endpoints -------------------------------------------------------------------------

    def upload(
        self,
        name: str,
        data: bytes,
        *,
        idempotency_key: str,
        priority: str | None,
        reference: str | None = None,
    ) -> dict:
        form = {"priority": priority} if priority else {}
        if reference is not None:
            form["reference"] = reference
        response = self.request(
            "POST",
            "/api/v1/jobs",
            files={"image": (name, data, "application/octet-stream")},
            data=form or None,
            headers={"Idempotency-Key": idempotency_key},
        )
        return response.json()

    def job(self, job_id: str, *, wait: int = 0) -> dict:
        params = {"wait": wait} if wait else None
        response = self.request(
            "GET", f"/api/v1/jobs/{job_id}", params=params, read_timeout=(wait + 30) if wait else None
        )
        return response.json()

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"/api/v1/jobs/{job_id}/cancel").json()

    def delete(self, job_id: str) -> dict:
        return self.request("DELETE", f"/api/v1/jobs/{job_id}").json()

    def result_csv(self, job_id: str) -> bytes:
        """The server's CSV of a job's result (`GET /jobs/{id}/result.csv`), its bytes as sent."""
        return self.request("GET", f"/api/v1/jobs/{job_id}/result.csv").content

    def jobs(self, *, status: str | None = None, reference: str | None = None, limit: int = 50) -> list[dict]:
        """The client's jobs, newest first, following `next` until `limit` are read."""
        params: dict[str, Any] = {"page_size": min(max(limit, 1), 500)}
        if status:
            params["status"] = status
        if reference is not None:
            params["reference"] = reference
        found: list[dict] = []
        page = self.request("GET", "/api/v1/jobs", params=params).json()
        while True:
            found.extend(page.get("results", []))
            if len(found) >= limit or not page.get("next"):
                return found[:limit]
            page = self.request("GET", page["next"]).json()


def normalise_url(url: str) -> str:
    """`http://host:8000`, whether given with a trailing slash or with `/api/v1`."""
    url = url.strip().rstrip("/")
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    if "://" not in url:
        url = f"http://{url}"
    return url


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 file`, `2 files`, `0 files`."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def describe_transport_error(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "connection refused or host not found",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.WriteTimeout: "upload timed out",
        httpx.RemoteProtocolError: "the connection was closed mid-answer",
    }
    for cls, words in kind.items():
        if isinstance(exc, cls):
            return words
    return type(exc).__name__

"""Domain errors. Services raise these; one handler renders them.

Each subclass has a stable machine-readable `code` and an HTTP status.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "error"
    status_code = 400
    default_message = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ):
        self.message = message or self.default_message
        self.details = details or {}
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class NotFound(ApplicationError):
    code = "not_found"
    status_code = 404
    default_message = "Not found."

"""One PACS attempt's outcome, and as a bounded label, for /metrics (backend/metrics/collectors.py).
No metrics library here (see backend/webhooks/outcomes.py for why)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreOutcome:
    """One attempt's result (backend/pacs/scu.py, or why nothing could be sent)."""

    stored: int  # how many datasets the PACS answered with success (or a warning)
    dimse_status: int | None  # the last C-STORE response status; None when none came
    error: str  # "" when every dataset was stored

    @property
    def ok(self) -> bool:
        return not self.error


ATTEMPT_ERRORS = (
    "connect_error",
    "association_rejected",
    "association_aborted",
    "no_response",
    "sop_class_not_accepted",
    # Not sendable: the destination, the result or the return path is gone.
    "destination_removed",
    "destination_disabled",
    "no_result",
    "no_return_path",
    "build_error",
)
ATTEMPT_OUTCOMES = ("stored", "dimse_failure", *ATTEMPT_ERRORS, "other_error")


def attempt_outcome(error: str) -> str:
    """stored, dimse_failure (the PACS answered a failure status), or the kind of error."""
    kind = (error or "").split(":", 1)[0].strip()
    if not kind:
        return "stored"
    if kind.startswith("dimse_0x"):
        return "dimse_failure"
    return kind if kind in ATTEMPT_ERRORS else "other_error"

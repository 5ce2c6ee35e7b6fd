"""Who may read metrics, for the web's /metrics and the worker's port alike.

A caller that sends `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time) may;
a caller on loopback may where METRICS_ALLOW_LOOPBACK (development and tests; production turns
it off, since there a local reverse proxy would make every caller look local). Anything else is
refused in the one error shape. Metrics carry client names and workload figures, not patient
data, but they are an operator's view: not for the clients the API serves.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="metrics"'} if self.status == 401 else {}


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def refusal(*, remote_addr: str, authorization: str) -> Refusal | None:
    """None when this caller may read metrics, else why not."""
    token = settings.METRICS_TOKEN
    if authorization:
        scheme, _, given = authorization.strip().partition(" ")
        if not token:
            return Refusal(401, "authentication_failed", "No metrics token is configured here.")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode()
        ):
            return Refusal(401, "authentication_failed", "The metrics token is not valid.")
        return None
    if settings.METRICS_ALLOW_LOOPBACK and is_loopback(remote_addr):
        return None
    if token:
        return Refusal(401, "not_authenticated", "Send Authorization: Bearer <metrics token>.")
    if settings.METRICS_ALLOW_LOOPBACK:
        return Refusal(
            403,
            "permission_denied",
            "Metrics are served to callers on this machine; set CXRQ_METRICS_TOKEN to scrape from elsewhere.",
        )
    return Refusal(
        401, "not_authenticated", "Metrics need a token here, and none is configured (CXRQ_METRICS_TOKEN)."
    )

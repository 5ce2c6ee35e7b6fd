"""Signing in to the web client with an API key, and who the browser is on each request after.

The key is checked once, at sign-in, exactly as the API checks it (clients.selectors.usable_api_key:
well-formed, known, not revoked, not expired, the SHA-512 matches). The session, kept on the
server (Django's database sessions; the browser holds only the session id, in an HttpOnly cookie),
then records which client and which key (by its prefix) it acts for, never the key itself. Every
later request looks the key up again by that prefix: a key revoked or expired since ends the
session on its next request, as the API would refuse the key itself.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from backend.audit.services import Actor
from backend.clients import ratelimit
from backend.clients import selectors as key_selectors
from backend.clients.models import ApiKey, Client, Scope
from backend.core.logging import request_id_var
from backend.jobs import errors as job_errors
from backend.web import errors

logger = logging.getLogger(__name__)

SESSION_KEY = "cxrq_web"
ACTOR_KIND = "web_session"


@dataclass(frozen=True)
class Signed:
    """The client a signed-in browser acts for, and with which key."""

    client: Client
    api_key: ApiKey

    @property
    def can_write(self) -> bool:
        return self.api_key.scope == Scope.SUBMIT

    def require_write(self) -> None:
        if not self.can_write:
            raise errors.ReadOnlyKey()

    def actor(self, request: HttpRequest) -> Actor:
        """For the audit log: the client and key prefix, like an API call, marked as the web's."""
        return Actor(
            kind=ACTOR_KIND,
            client_id=self.client.id,
            api_key_prefix=self.api_key.prefix,
            address=request.META.get("REMOTE_ADDR") or None,
            request_id=request_id_var.get(),
        )


def sign_in(request: HttpRequest, key: str) -> Signed:
    """Check the key as the API does; on success start a fresh session for its client."""
    address = request.META.get("REMOTE_ADDR") or "-"
    rate = ratelimit.Rate.parse(settings.WEB_SIGN_IN_RATE)
    if rate is not None and (wait := ratelimit.acquire(f"web-sign-in:{address}", rate)) > 0:
        raise errors.RateLimited(retry_after=ratelimit.retry_after_seconds(wait))
    api_key = key_selectors.usable_api_key(key.strip())
    if api_key is None:
        logger.info(
            "event=web_sign_in_refused prefix=%s", _printable(key.strip()[: key_selectors.PREFIX_LENGTH])
        )
        raise errors.SignInRefused()
    if api_key.scope not in (Scope.SUBMIT, Scope.READ):
        raise errors.OperatorKey()
    # A new session id at every sign-in (no fixation); the old session's data goes with it.
    request.session.flush()
    request.session[SESSION_KEY] = {"client_id": str(api_key.client_id), "prefix": api_key.prefix}
    request.session.set_expiry(settings.WEB_SESSION_SECONDS)
    logger.info("event=web_signed_in client_id=%s prefix=%s", api_key.client_id, api_key.prefix)
    return Signed(client=api_key.client, api_key=api_key)


def sign_out(request: HttpRequest) -> None:
    request.session.flush()


def signed(request: HttpRequest) -> Signed | None:
    """The session's client and key while that key is still usable; else None, and a session
    whose key was revoked, expired or deleted is ended here."""
    data = request.session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    try:
        client_id = uuid.UUID(str(data.get("client_id")))
    except ValueError:
        request.session.flush()
        return None
    api_key = (
        ApiKey.objects.select_related("client")
        .filter(prefix=str(data.get("prefix", "")), client_id=client_id)
        .first()
    )
    if api_key is None or api_key.revoked or api_key.has_expired or api_key.scope == Scope.OPERATOR:
        logger.info("event=web_session_ended reason=key_unusable client_id=%s", client_id)
        request.session.flush()
        return None
    return Signed(client=api_key.client, api_key=api_key)


def charge(who: Signed, *, write: bool, cost: int = 1) -> None:
    """The client's own rates (the same counters as its API calls): a browser is one more caller."""
    scope = "upload" if write else "read"
    rate = ratelimit.Rate.parse(who.client.rate_for(scope))
    if rate is None:
        return
    if not ratelimit.fits(rate, cost):  # more files at once than the whole rate: no wait lets them in
        raise job_errors.TooManyImages(
            f"Upload at most {rate.count} images at once.",
            details={"images": cost, "max_images": rate.count, "rate": who.client.rate_for(scope)},
        )
    wait = ratelimit.acquire(f"{scope}:{who.client.pk}", rate, cost)
    if wait > 0:
        raise errors.RateLimited(retry_after=ratelimit.retry_after_seconds(wait))


def _printable(text: str) -> str:
    return text.encode("ascii", "replace").decode()

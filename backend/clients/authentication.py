"""`Authorization: Api-Key <key>` (or `Bearer <key>`) -> the key's client, for every API request.

A request without the header is anonymous (the permission then answers 401
with WWW-Authenticate); a header that is malformed, or names a key that is
unknown, revoked or expired, is 401 at once. The failure says which, without
saying anything about other clients or keys.
"""

from __future__ import annotations

import logging

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from backend.clients import selectors
from backend.clients.models import ApiKey, Client

logger = logging.getLogger(__name__)

SCHEMES = ("api-key", "bearer")
# Updating last_used_at on every request would write on every poll: once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


class InvalidApiKey(exceptions.AuthenticationFailed):
    """401 with WWW-Authenticate (DRF adds it for AuthenticationFailed), code invalid_api_key."""

    default_detail = "The API key is malformed, unknown, revoked or expired."
    default_code = "invalid_api_key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.strip().partition(" ")
        api_key = selectors.usable_api_key(key.strip()) if scheme.lower() in SCHEMES else None
        if api_key is None:
            logger.info(
                "event=api_key_refused prefix=%s",
                key.strip()[: selectors.PREFIX_LENGTH].encode("ascii", "replace").decode(),
            )
            raise InvalidApiKey()
        _touch(api_key)
        return api_key.client, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Api-Key realm="cxrq"'


def _touch(api_key: ApiKey) -> None:
    now = timezone.now()
    last = api_key.last_used_at
    if last is None or (now - last).total_seconds() >= LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)

"""Who is acting, from a request: a client's key or an admin user, with address and request id."""

from __future__ import annotations

from rest_framework.request import Request

from backend.audit.services import Actor
from backend.clients.models import ApiKey
from backend.core.logging import request_id_var


def actor_from_request(request) -> Actor:
    """For DRF requests (a client's key) and Django admin requests (a staff user)."""
    address = request.META.get("REMOTE_ADDR") or None
    api_key = request.auth if isinstance(request, Request) else None
    if isinstance(api_key, ApiKey):
        return Actor(
            kind="api_key",
            client_id=api_key.client_id,
            api_key_prefix=api_key.prefix,
            address=address,
            request_id=request_id_var.get(),
        )
    user = getattr(request, "user", None)
    return Actor(
        kind="admin",
        user=getattr(user, "username", "") or "",
        address=address,
        request_id=request_id_var.get(),
    )


COMMAND = Actor(kind="command")

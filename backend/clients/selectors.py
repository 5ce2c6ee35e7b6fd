"""Reads of clients and keys."""

from __future__ import annotations

from backend.clients.models import ApiKey

PREFIX_LENGTH = 8


def well_formed(key: str) -> bool:
    """`<8 alphanumerics>.<1-128 alphanumerics>`: anything else is refused before any query."""
    prefix, dot, secret = key.partition(".")
    return (
        bool(dot)
        and len(prefix) == PREFIX_LENGTH
        and 0 < len(secret) <= 128
        and (prefix + secret).isascii()
        and (prefix + secret).isalnum()
    )


def usable_api_key(key: str) -> ApiKey | None:
    """The live key this value is (with its client), or None: malformed, unknown, revoked or expired."""
    if not well_formed(key):
        return None
    api_key = ApiKey.objects.select_related("client").filter(prefix=key.partition(".")[0]).first()
    if api_key is None or api_key.revoked or api_key.has_expired or not api_key.is_valid(key):
        return None
    return api_key

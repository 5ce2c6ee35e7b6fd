"""What a key's scope allows: submit (upload, read), read (read), operator (no job data)."""

from __future__ import annotations

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from backend.clients.models import ApiKey, Scope

READS = (Scope.SUBMIT, Scope.READ)
WRITES = (Scope.SUBMIT,)


class InsufficientScope(exceptions.PermissionDenied):
    default_detail = "This API key's scope does not allow this request."
    default_code = "insufficient_scope"


class HasJobScope(permissions.BasePermission):
    """A client's key whose scope allows this method on its jobs. No key: 401 (DRF raises
    NotAuthenticated when no authenticator succeeded); a key of the wrong scope: 403."""

    def has_permission(self, request: Request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        allowed = READS if request.method in permissions.SAFE_METHODS else WRITES
        if api_key.scope not in allowed:
            raise InsufficientScope(detail=f"A {api_key.scope} key cannot {request.method} this resource.")
        return True


def is_operator(request: Request) -> bool:
    """An operator key, or a staff member signed in to the admin."""
    api_key = request.auth
    if isinstance(api_key, ApiKey):
        return api_key.scope == Scope.OPERATOR
    user = getattr(request, "user", None)
    return bool(user is not None and getattr(user, "is_staff", False))

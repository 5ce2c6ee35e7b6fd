"""One error shape for every error: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from backend.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)

_DRF_CODES = {
    drf.ParseError: "parse_error",
    drf.AuthenticationFailed: "authentication_failed",
    drf.NotAuthenticated: "not_authenticated",
    drf.PermissionDenied: "permission_denied",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "rate_limited",
    drf.ValidationError: "validation_error",
}


_REQUEST_LIMITS = {
    TooManyFieldsSent: ("too_many_fields", 400),
    TooManyFilesSent: ("too_many_files", 400),
    RequestDataTooBig: ("request_too_large", 413),
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        # A refused request is one line with its code, never a traceback: it is the client's error.
        logger.info("event=request_refused status=%d code=%s", exc.status_code, exc.code)
        return Response(
            error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=exc.headers
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down or restarting: nothing was stored; the client can retry.
        logger.warning("event=database_unavailable error=%r", exc)
        return Response(
            error_body("database_unavailable", "The database is unavailable; retry shortly."),
            status=503,
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig)):
        # Django's own limits on a request (DATA_UPLOAD_MAX_NUMBER_FIELDS / _FILES / _MEMORY_SIZE).
        code, status = _REQUEST_LIMITS[type(exc)]
        logger.info("event=request_refused status=%d code=%s", status, code)
        return Response(error_body(code, str(exc)), status=status)
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected exception: Django's 500 path logs it
    # DRF's own exceptions by their class; a subclass of ours says its code (default_code).
    code = _DRF_CODES.get(type(exc)) or getattr(getattr(exc, "detail", None), "code", None)
    code = code or next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, drf.ValidationError):
        message, details = "Invalid input.", exc.detail
    else:
        message, details = str(getattr(exc, "detail", exc)), {}
    response.data = error_body(code, message, details)
    return response

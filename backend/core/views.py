"""JSON 400/403/404/500 for paths outside DRF views, in the one error shape."""

from django.http import JsonResponse
from django.shortcuts import render

from backend.core.exception_handler import error_body


def not_found(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request):  # noqa: ARG001
    return JsonResponse(error_body("internal_error", "Internal server error."), status=500)


def bad_request(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a form or request refused by CSRF protection. 403 in the error shape
    (the admin, the API, the web client's script), except for a person's form in the web client,
    who gets a page in its own look saying what to do (Django's stock page is a developer's)."""
    match = getattr(request, "resolver_match", None)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if match is not None and match.namespace == "web" and not wants_json:
        return render(request, "web/csrf_failure.html", status=403)
    message = "The request was refused by CSRF protection: reload the page and send the form again."
    return JsonResponse(error_body("csrf_failed", message, {"reason": reason}), status=403)


def read_only(view):
    """GET and HEAD only, any other method 405 in the error shape. For views whose renderer is
    HTML only (the API docs pages): DRF would render the 405 with that renderer and fail."""
    from functools import wraps

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(error_body("method_not_allowed", "Only GET and HEAD."), status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapped

"""JSON 404/500 for paths outside DRF views, in the one error shape."""

from django.http import JsonResponse

from backend.core.exception_handler import error_body


def not_found(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request):  # noqa: ARG001
    return JsonResponse(error_body("internal_error", "Internal server error."), status=500)


def bad_request(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


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

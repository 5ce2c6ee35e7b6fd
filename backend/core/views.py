"""JSON 404/500 for paths outside DRF views, in the one error shape."""

from django.http import JsonResponse

from backend.core.exception_handler import error_body


def not_found(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request):  # noqa: ARG001
    return JsonResponse(error_body("internal_error", "Internal server error."), status=500)


def bad_request(request, exception=None):  # noqa: ARG001
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)

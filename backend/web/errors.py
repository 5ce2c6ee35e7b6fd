"""The web client's own refusals, in the same shape as the API's (backend/core/exceptions.py)."""

from __future__ import annotations

from backend.core.exceptions import ApplicationError


class NotSignedIn(ApplicationError):
    code = "not_signed_in"
    status_code = 401
    default_message = "You are not signed in, or your session has ended. Sign in with your API key."


class SignInRefused(ApplicationError):
    code = "invalid_api_key"
    status_code = 401
    default_message = "This API key is not valid: it is mistyped, unknown, revoked or expired."


class OperatorKey(ApplicationError):
    code = "insufficient_scope"
    status_code = 403
    default_message = (
        "This is an operator key: it shows queue figures, not jobs. Sign in with a submit or read key."
    )


class ReadOnlyKey(ApplicationError):
    code = "insufficient_scope"
    status_code = 403
    default_message = "This key may only read jobs: uploading, cancelling and deleting need a submit key."


class RateLimited(ApplicationError):
    code = "rate_limited"
    status_code = 429
    default_message = "Too many requests for now: wait a moment and try again."


class ResultNotReady(ApplicationError):
    code = "result_not_ready"
    status_code = 409
    default_message = "This job has no result to download: only a succeeded job has one."


class ImageNotAvailable(ApplicationError):
    code = "image_not_available"
    status_code = 404
    default_message = "The stored image of this job has been deleted."


class TooManyWatched(ApplicationError):
    code = "too_many_jobs"
    status_code = 400
    default_message = "Too many jobs watched at once."


class ConfirmationRequired(ApplicationError):
    code = "confirmation_required"
    status_code = 400
    default_message = "Deleting a job needs its confirmation: send confirm=yes with the request."

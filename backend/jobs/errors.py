"""Stable error codes for uploads and jobs (documented in docs/api.md)."""

from backend.core.exceptions import ApplicationError, NotFound


class MissingImage(ApplicationError):
    code = "missing_image"
    status_code = 400
    default_message = "Send the image as multipart/form-data in the field 'image'."


class EmptyFile(ApplicationError):
    code = "empty_file"
    status_code = 400
    default_message = "The uploaded file is empty."


class FileTooLarge(ApplicationError):
    code = "file_too_large"
    status_code = 413
    default_message = "The uploaded file is larger than the limit."


class UnsupportedMediaType(ApplicationError):
    code = "unsupported_media_type"
    status_code = 415
    default_message = "The file is not an accepted image format."


class InvalidImage(ApplicationError):
    code = "invalid_image"
    status_code = 400
    default_message = "The file could not be decoded as an image."


class ImageTooManyPixels(ApplicationError):
    code = "image_too_many_pixels"
    status_code = 413
    default_message = "The image has more pixels than the limit."


class ImageTooSmall(ApplicationError):
    code = "image_too_small"
    status_code = 400
    default_message = "The image is too small to analyse."


class JobNotFound(NotFound):
    code = "job_not_found"
    default_message = "No job with this id."


class InvalidFilter(ApplicationError):
    code = "invalid_filter"
    status_code = 400
    default_message = "Invalid query parameter."


class QueueFull(ApplicationError):
    code = "queue_full"
    status_code = 503
    default_message = (
        "Too many images are waiting for analysis; retry later. Cached results are still served."
    )


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 409
    default_message = "This Idempotency-Key was used with a different image."


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    status_code = 400
    default_message = "Idempotency-Key must be 1-255 printable ASCII characters."

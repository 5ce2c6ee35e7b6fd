"""Stable error codes for uploads and jobs (documented in docs/api.md)."""

from backend.core.exceptions import ApplicationError, NotFound


class MissingImage(ApplicationError):
    code = "missing_image"
    status_code = 400
    default_message = "Send the image as multipart/form-data in the field 'image'."


class MultipleImages(ApplicationError):
    code = "multiple_images"
    status_code = 400
    default_message = "Send one image per upload: the field 'image' came more than once."


class InvalidContentLength(ApplicationError):
    code = "invalid_content_length"
    status_code = 400
    default_message = "The Content-Length header must be a non-negative whole number of bytes."


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


class AmbiguousUpload(ApplicationError):
    code = "ambiguous_upload"
    status_code = 400
    default_message = (
        "Send one image in the field 'image', or several to POST /api/v1/batches in 'images': not both."
    )


class QueueFull(ApplicationError):
    code = "queue_full"
    status_code = 503
    default_message = (
        "Too many images are waiting for analysis; retry later. Cached results are still served."
    )


class ClientQueueFull(ApplicationError):
    code = "client_queue_full"
    status_code = 429
    default_message = (
        "This client has as many images waiting for analysis as it may; retry later. "
        "Cached results are still served."
    )


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 409
    default_message = "This Idempotency-Key was used with a different image."


class IdempotencyKeyBusy(ApplicationError):
    code = "idempotency_key_busy"
    status_code = 409
    default_message = (
        "Another request with this Idempotency-Key was in flight and did not complete; retry the request."
    )


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    status_code = 400
    default_message = "Idempotency-Key must be 1-255 printable ASCII characters."


# --- format recognition and DICOM (docs/intake.md) ---------------------------------------


class AmbiguousFormat(ApplicationError):
    code = "ambiguous_format"
    status_code = 415
    default_message = "The file carries the signatures of more than one format (a polyglot); it is refused."


class TrailingData(ApplicationError):
    code = "trailing_data"
    status_code = 400
    default_message = "The file has data after the end of the image."


class DicomUnsupportedTransferSyntax(ApplicationError):
    code = "dicom_unsupported_transfer_syntax"
    status_code = 415
    default_message = "The DICOM transfer syntax is not supported."


class DicomUnsupportedObject(ApplicationError):
    code = "dicom_unsupported_object"
    status_code = 415
    default_message = (
        "The DICOM object is not a single-frame radiograph (CR, DX or Secondary Capture image); "
        "structured reports, presentation states and other objects are not accepted."
    )


class DicomNoPixelData(ApplicationError):
    code = "dicom_no_pixel_data"
    status_code = 422
    default_message = "The DICOM file has no Pixel Data (or is truncated before it)."


class DicomMultiFrame(ApplicationError):
    code = "dicom_multiframe"
    status_code = 422
    default_message = "Multi-frame DICOM is not accepted: send one frame per file."


class DicomColor(ApplicationError):
    code = "dicom_color"
    status_code = 422
    default_message = "Colour DICOM is not accepted: chest radiographs are MONOCHROME1 or MONOCHROME2."


class DicomUnsupportedPixels(ApplicationError):
    code = "dicom_unsupported_pixels"
    status_code = 422
    default_message = "The DICOM pixel encoding is not supported (unsigned 8- or 16-bit integers only)."


class DicomBurnedInAnnotation(ApplicationError):
    code = "dicom_burned_in_annotation"
    status_code = 422
    default_message = (
        "The DICOM header says identifying text is burned into the pixels (Burned In Annotation = YES); "
        "it cannot be de-identified and is not stored."
    )


class DicomHeaderTooLarge(ApplicationError):
    code = "dicom_header_too_large"
    status_code = 413
    default_message = "The DICOM header (everything before the pixel data) is larger than the limit."


class JobNotCancellable(ApplicationError):
    code = "job_not_cancellable"
    status_code = 409
    default_message = "The job has already ended: only queued and in-progress jobs can be cancelled."


class InvalidPriority(ApplicationError):
    code = "invalid_priority"
    status_code = 400
    default_message = "priority must be 'stat' or 'routine'."


class InvalidWait(ApplicationError):
    code = "invalid_wait"
    status_code = 400
    default_message = "wait must be a whole number of seconds, at most the configured maximum."


class InvalidCallbackUrl(ApplicationError):
    code = "invalid_callback_url"
    status_code = 400
    default_message = "callback_url must be an absolute http(s) URL with a host, no user name or password."


class CallbackUrlHttpsRequired(ApplicationError):
    code = "callback_url_https_required"
    status_code = 400
    default_message = "callback_url must use https here."


class CallbackUrlNotAllowed(ApplicationError):
    code = "callback_url_not_allowed"
    status_code = 400
    default_message = "callback_url's host is not on this client's webhook allow-list (ask the operator)."


class JobInProgress(ApplicationError):
    code = "job_in_progress"
    status_code = 409
    default_message = "The job is being analysed: cancel it, then delete it once it has ended."


class MissingImages(ApplicationError):
    code = "missing_images"
    status_code = 400
    default_message = "Send the images as multipart/form-data, the field 'images' once per image."


class TooManyImages(ApplicationError):
    code = "too_many_images"
    status_code = 400
    default_message = "Too many images in one batch."


class BatchNotFound(NotFound):
    code = "batch_not_found"
    default_message = "No batch with this id."


# --- which images are chest X-rays (backend/jobs/eligibility.py, docs/intake.md) ---------


class NotChestXray(ApplicationError):
    code = "not_chest_xray"
    status_code = 422
    default_message = (
        "The image is not a chest X-ray this client accepts (Modality, BodyPartExamined or ViewPosition)."
    )


class DicomInflatedTooLarge(ApplicationError):
    code = "dicom_inflated_too_large"
    status_code = 413
    default_message = (
        "The Deflated DICOM file inflates to more than an uncompressed upload may be; "
        "it is not inflated further."
    )


# --- why the worker ended a job (worker/batch_loop.py, worker/handler.py) ---------------------
# What its client reads, by error code: a sentence, never an exception's class or text. The detail
# (exception, traceback, batch and job ids) is in the worker's log line for the same job ids.
JOB_ERROR_MESSAGES = {
    "worker_error": "The analysis failed because of an error in the service; the operators have the details.",
    "inference_failed": "The model could not analyse this image; the operators have the details.",
    "upload_unreadable": "The stored image could not be read for analysis.",
}


def job_error_message(code: str, stored: str) -> str:
    """The message a job's client is shown for its error: the fixed sentence for the worker's own
    codes (rows written before these sentences carry exception text), else what was stored."""
    return JOB_ERROR_MESSAGES.get(code, stored)


class InvalidReference(ApplicationError):
    code = "invalid_reference"
    status_code = 400
    default_message = (
        "The reference must be 1-64 characters: letters, digits, space and . _ - : / # "
        "(no leading or trailing space); in a batch, one reference per image or none."
    )

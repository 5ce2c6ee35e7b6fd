"""Why a job has no report to give (docs/api.md's error codes)."""

from backend.core.exceptions import ApplicationError


class JobNotSucceeded(ApplicationError):
    code = "job_not_succeeded"
    status_code = 409
    default_message = "The job has no result: only a succeeded job has a report (wait for it to end)."


class JobDeleted(ApplicationError):
    code = "job_deleted"
    status_code = 410
    default_message = "The job was deleted (by its client or by retention): its result is gone."


class TooManyReportRequests(ApplicationError):
    code = "too_many_report_requests"
    status_code = 429
    default_message = (
        "This client has as many report requests (sr.dcm, fhir) in progress as it may: "
        "retry after the time in Retry-After."
    )

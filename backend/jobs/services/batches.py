"""Several images in one request: each is an upload of its own (validated, deduplicated, queued by
intake.job_create), each with its own outcome; the batch records them in the order sent.

Partial failure is per image: a refused image is an item with its error, and the others are
jobs. Only what concerns the request as a whole refuses all of it: no images, too many, a bad
priority or callback_url (they apply to every image). Sending the same batch again creates no
second job for any image: each dedups on its bytes.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from backend.clients.models import Client
from backend.core.exceptions import ApplicationError
from backend.jobs import errors, images
from backend.jobs import reference as references
from backend.jobs.models import Job, UploadBatch
from backend.jobs.services import intake


def batch_create(
    *,
    client: Client,
    uploads: list[UploadedFile],
    priority: str | None = None,
    callback_url: str | None = None,
    reference: list[str] | None = None,
) -> UploadBatch:
    """reference: one per image in the images' order, or none (else 400 invalid_reference)."""
    if not uploads:
        raise errors.MissingImages()
    if len(uploads) > settings.BATCH_MAX_IMAGES:
        raise errors.TooManyImages(details={"images": len(uploads), "max_images": settings.BATCH_MAX_IMAGES})
    urgency, callback = intake.upload_options(client=client, priority=priority, callback_url=callback_url)
    per_image = references.check_per_image(reference, images=len(uploads))
    items: list[dict] = []
    jobs: list[Job] = []
    for index, upload in enumerate(uploads):
        item = {
            "index": index,
            "filename": images.stored_filename(upload.name or "", keep=settings.STORE_ORIGINAL_FILENAME),
        }
        try:
            outcome = intake.job_create(
                client=client,
                upload=upload,
                original_filename=upload.name or "",
                content_type=upload.content_type or "",
                priority=urgency.label,
                callback_url=callback,
                reference=per_image[index],
            )
        except ApplicationError as exc:
            item["error"] = {
                "status": exc.status_code,
                "code": exc.code,
                "message": str(exc.message),
                "details": exc.details or {},
            }
        else:
            item |= {"job_id": str(outcome.job.id), "deduplicated": outcome.deduplicated}
            jobs.append(outcome.job)
        items.append(item)
    with transaction.atomic():
        batch = UploadBatch.objects.create(
            client=client, priority=urgency, callback_url=callback, items=items
        )
        batch.jobs.set(jobs)
    return batch


def batch_get(*, client: Client, batch_id: str | uuid.UUID) -> UploadBatch:
    """The client's batch; another client's is not found, exactly like an unknown id."""
    try:
        key = uuid.UUID(str(batch_id))
    except ValueError:
        raise errors.BatchNotFound() from None
    batch = UploadBatch.objects.filter(client=client, id=key).first()
    if batch is None:
        raise errors.BatchNotFound()
    return batch


def batch_jobs(batch: UploadBatch) -> dict[str, Job]:
    """Its jobs by id, with their results (one query)."""
    return {str(job.id): job for job in batch.jobs.select_related("result")}

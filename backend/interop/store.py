"""A job's SR and FHIR report, built once and served from its sealed copy after.

    stored = report_get(job=job, kind=ReportKind.SR)   # StoredBody(body, etag)

The first request for a job's report builds it (sr.py, fhir.py) and keeps the encoded bytes in
a StoredReport row, sealed with AES-256-GCM under the return path's key (backend/core/phi.py:
an SR carries the patient's name, ID and accession from the return path). The job id and the
kind are the associated data, so a copy moved onto another row does not open. Later requests,
and the PACS delivery, read it back instead of building again.

- Build once: concurrent first requests for one job wait on the job's result row (PostgreSQL
  `SELECT ... FOR UPDATE`) and the one that gets it first builds; the others find its row. Where
  rows are not locked (SQLite) the unique (result, kind) keeps one row and the loser reads it.
- Fresh: a row remembers what it was built from (`_inputs`: the result, the return path if there
  is one, the stored image, the builder's version); when that changes (the image went to
  retention, the return path was forgotten) the row is replaced on the next request.
- Gone with what it came from: the row cascades from the result (a deleted job) and from the
  return path (its PHI forgotten); `reports_forget` removes the rest when a job's image goes
  (backend/jobs/services/deletion.py).

Only succeeded jobs have a report; for any other the builders raise the usual errors
(JobNotSucceeded, JobDeleted) and nothing is stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from backend.core import phi
from backend.core.phi import keys as phi_keys
from backend.dicomnet.models import ReturnPath
from backend.dicomnet.returnpath import return_path_for
from backend.interop.models import ReportKind, StoredReport
from backend.jobs.models import Job, JobResult

logger = logging.getLogger(__name__)

# Bump when what a builder writes changes: stored reports of the old shape are then rebuilt.
BUILDER_VERSION = "1"


@dataclass(frozen=True)
class StoredBody:
    body: bytes
    etag: str  # a strong validator: another build (other inputs) is another row, another tag

    def __repr__(self) -> str:  # never the report (PHI) in a log line
        return f"StoredBody(bytes={len(self.body)}, etag={self.etag})"


def _context(job_id: uuid.UUID | str, kind: str) -> bytes:
    return f"report:{kind}:{job_id}".encode()


def seal_bytes(plain: bytes, *, job_id: uuid.UUID | str, kind: str) -> bytes:
    """phi.py's layout and key, for bytes: version | key id | nonce | ciphertext and tag."""
    key = phi_keys()[0]
    nonce = os.urandom(phi.NONCE_BYTES)
    return phi.VERSION + key.key_id + nonce + key.aead.encrypt(nonce, plain, _context(job_id, kind))


def open_bytes(sealed: bytes, *, job_id: uuid.UUID | str, kind: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    sealed = bytes(sealed)
    header = len(phi.VERSION) + phi.KEY_ID_BYTES + phi.NONCE_BYTES
    if len(sealed) <= header or sealed[:1] != phi.VERSION:
        raise phi.PhiUnreadable("not a sealed value")
    key_id, nonce = sealed[1 : 1 + phi.KEY_ID_BYTES], sealed[1 + phi.KEY_ID_BYTES : header]
    for key in phi_keys():
        if key.key_id == key_id:
            try:
                return key.aead.decrypt(nonce, sealed[header:], _context(job_id, kind))
            except InvalidTag:
                raise phi.PhiUnreadable("the sealed report does not open under its key") from None
    raise phi.PhiUnreadable("sealed under a key that is no longer configured")


def _inputs(job: Job, result: JobResult, return_path_id: uuid.UUID | None) -> str:
    """What the report is built from, as one value: the report changes when this does."""
    image = "" if job.image_deleted_at or not job.upload else job.upload.name
    parts = (BUILDER_VERSION, str(result.created_at.isoformat()), str(return_path_id or ""), image)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _etag(row: StoredReport) -> str:
    return f'"{row.kind}-{row.id.hex}"'


def _build(job: Job, kind: str) -> bytes:
    """The report's bytes, built now (the expensive part: a few hundred ms for an SR)."""
    if kind == ReportKind.SR:
        from backend.interop import sr

        return sr.to_bytes(sr.build_sr(job=job, return_path=return_path_for(job)))
    from backend.interop import fhir

    return fhir.to_json(fhir.build_diagnostic_report(job=job, return_path=return_path_for(job)))


def _current(job: Job, kind: str) -> tuple[StoredReport | None, JobResult, uuid.UUID | None, str]:
    result = JobResult.objects.get(job_id=job.pk)
    return_path_id = ReturnPath.objects.filter(job_id=job.pk).values_list("job_id", flat=True).first()
    inputs = _inputs(job, result, return_path_id)
    row = StoredReport.objects.filter(result_id=job.pk, kind=kind, inputs=inputs).first()
    return row, result, return_path_id, inputs


def _served(job: Job, row: StoredReport | None) -> StoredBody | None:
    """The stored copy opened; None when there is none, or when no configured key opens it (its
    key was removed from CXRQ_PHI_KEY): then it is built again, not answered 500."""
    if row is None:
        return None
    try:
        return StoredBody(body=open_bytes(row.sealed, job_id=job.pk, kind=row.kind), etag=_etag(row))
    except phi.PhiUnreadable:
        logger.warning(
            "event=stored_report_unreadable job_id=%s kind=%s key_id=%s", job.pk, row.kind, row.key_id
        )
        return None


def report_get(*, job: Job, kind: str) -> StoredBody:
    """The job's report of this kind: the stored one, else built now (once) and stored."""
    from backend.interop import findings

    findings.report_for(job)  # JobNotSucceeded / JobDeleted: no result, nothing to build or store
    row, *_ = _current(job, kind)
    if served := _served(job, row):
        return served
    with transaction.atomic():
        # The one lock every builder of this job's report takes: the others wait here, then find
        # the row the first one stored.
        locked = JobResult.objects.select_for_update().filter(job_id=job.pk).values_list("job_id", flat=True)
        if not list(locked):  # the job was deleted while this request ran
            job.refresh_from_db()
            findings.report_for(job)
        row, result, return_path_id, inputs = _current(job, kind)
        if served := _served(job, row):
            return served
        body = _build(job, kind)
        sealed = seal_bytes(body, job_id=job.pk, kind=kind)
        # A row built from other inputs (the image or the return path has gone since) is replaced.
        StoredReport.objects.filter(result_id=job.pk, kind=kind).delete()
        try:
            with transaction.atomic():
                row = StoredReport.objects.create(
                    result=result,
                    return_path_id=return_path_id,
                    kind=kind,
                    inputs=inputs,
                    sealed=sealed,
                    key_id=phi.key_id_of(sealed),
                )
        except IntegrityError:  # built at the same time elsewhere (no row locks): keep theirs
            row = StoredReport.objects.filter(result_id=job.pk, kind=kind).first()
            return _served(job, row) or StoredBody(body=body, etag=f'"{kind}-{uuid.uuid4().hex}"')
    logger.info("event=report_built job_id=%s kind=%s bytes=%d", job.pk, kind, len(body))
    return StoredBody(body=body, etag=_etag(row))


def reports_forget(job_ids: Iterable[uuid.UUID], *, reason: str) -> int:
    """Delete the stored reports of these jobs (their image went, or the job); how many went."""
    ids = list(job_ids)
    if not ids:
        return 0
    deleted, _ = StoredReport.objects.filter(result_id__in=ids).delete()
    if deleted:
        logger.info("event=reports_deleted reports=%d reason=%s", deleted, reason)
    return deleted

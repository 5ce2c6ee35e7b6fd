"""Reads for the web client, built on the jobs' selectors: every one is scoped by the client."""

from __future__ import annotations

import hashlib
import uuid

from django.core.paginator import Page, Paginator

from backend.clients.models import Client
from backend.jobs import selectors
from backend.jobs.errors import job_error_message
from backend.jobs.models import Job, JobStatus, Priority

RECENT_PAGE_SIZE = 25
# Jobs one page may watch in one long-poll (a page of uploads and its recent list).
MAX_WATCHED = 100


def recent_jobs(*, client: Client, status: str | None, page: str | int | None) -> Page:
    """The client's jobs, newest first, RECENT_PAGE_SIZE a page; `status` as the API's filter
    (unknown: InvalidFilter)."""
    return Paginator(selectors.job_list(client=client, status=status or None), RECENT_PAGE_SIZE).get_page(
        page
    )


def watched_jobs(*, client: Client, job_ids: list[str]) -> list[Job]:
    """The client's jobs among these ids (others' and unknown ids are simply absent)."""
    keys = []
    for raw in job_ids:
        try:
            keys.append(uuid.UUID(raw.strip()))
        except ValueError:
            continue
    if not keys:
        return []
    return list(selectors.job_list(client=client).filter(id__in=keys))


def status_word(job: Job) -> str:
    """queued, in_progress, succeeded, ...: the API's spelling."""
    return job.status.lower()


def job_state(job: Job) -> dict:
    """What a watching page needs to show one job's progress (no result: the page asks for the
    rendered panel when the job has ended)."""
    queue = selectors.queue_standing(job) if job.status == JobStatus.QUEUED else None
    return {
        "id": str(job.id),
        "status": status_word(job),
        "status_label": JobStatus(job.status).label,
        "ended": job.status in JobStatus.ended(),
        "priority": Priority(job.priority).label,
        "cancel_requested": job.cancel_requested_at is not None,
        "queue": queue,
        "error": {"code": job.error_code, "message": job_error_message(job.error_code, job.error_message)}
        if job.error_code
        else None,
    }


def states_etag(states: list[dict]) -> str:
    """Changes when any watched job's status, place in the queue, or error changes."""
    parts = sorted(
        (s["id"], s["status"], s["cancel_requested"], (s["queue"] or {}).get("jobs_ahead"), bool(s["error"]))
        for s in states
    )
    return f'"{hashlib.sha256(repr(parts).encode()).hexdigest()[:20]}"'

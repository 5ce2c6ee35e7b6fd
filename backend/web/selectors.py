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


def duration_text(seconds: float) -> str:
    """A wait in words a person reads at a glance: "4 s", "2 min", "1 h 5 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def waiting_text(queue: dict | None) -> str:
    """The queue object of the API (backend.jobs.selectors.queue_standing) in words: that no worker
    is running rather than a number when none is, else the jobs ahead and the estimate."""
    if not queue:
        return ""
    if queue.get("state") == "no_worker":
        return "No worker is running: this job will start when one does"
    ahead = queue.get("jobs_ahead") or 0
    text = f"{ahead} job{'' if ahead == 1 else 's'} ahead"
    eta = queue.get("eta_seconds")
    if eta is not None:
        text += f", done in about {duration_text(eta)}"
    return text


def job_state(job: Job) -> dict:
    """What a watching page needs to show one job's progress (no result: the page asks for the
    rendered panel when the job has ended)."""
    queue = selectors.queue_standing(job) if job.status == JobStatus.QUEUED else None
    return {
        "waiting_text": waiting_text(queue),
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
    """Changes when any watched job's status, its waiting in words (place in the queue, estimate,
    or no worker), or error changes."""
    parts = sorted(
        (s["id"], s["status"], s["cancel_requested"], s["waiting_text"], bool(s["error"])) for s in states
    )
    return f'"{hashlib.sha256(repr(parts).encode()).hexdigest()[:20]}"'

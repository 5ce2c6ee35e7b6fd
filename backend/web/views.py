"""The web client's views: thin, like the API's. Each takes the session's client (session.signed),
calls the same services and selectors as the API, and answers with a page, a fragment, JSON for the
page's script, or a file. Refusals are the services' own errors, shown by their message."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backend.audit.services import audit_read, audit_write
from backend.core.conditional import if_none_match
from backend.core.exception_handler import error_body
from backend.core.exceptions import ApplicationError
from backend.edge import waiting
from backend.edge.asgi import body_limit
from backend.jobs import csv_export, thumbnails
from backend.jobs import errors as job_errors
from backend.jobs import reference as references
from backend.jobs import selectors as job_selectors
from backend.jobs.models import Job, JobStatus
from backend.jobs.serializers import JobOutputSerializer
from backend.jobs.services import cancellation, deletion, intake
from backend.metrics.uploads import count_upload
from backend.web import errors, results, selectors, session

STATUS_CHOICES = [(s.value.lower(), s.label.capitalize()) for s in JobStatus]
ACCEPT = ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _error_json(exc: ApplicationError) -> JsonResponse:
    response = JsonResponse(error_body(exc.code, str(exc.message), exc.details), status=exc.status_code)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _back(request: HttpRequest, default: str = "web:home") -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return redirect(target)
    return redirect(default)


def page(view: Callable) -> Callable:
    """An HTML page or form action for a signed-in browser: else back to the sign-in page. A
    service's refusal becomes a message on the page it came from (JSON when the script asked)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        had_session = session.SESSION_KEY in request.session
        who = session.signed(request)
        if who is None:
            if _wants_json(request):
                return _error_json(errors.NotSignedIn())
            if had_session:
                messages.warning(request, "Your session ended: the API key was revoked or has expired.")
            return redirect("web:home")
        try:
            return view(request, who, *args, **kwargs)
        except job_errors.JobNotFound as exc:
            if _wants_json(request):
                return _error_json(exc)
            return render(request, "web/not_found.html", {"who": who}, status=404)
        except ApplicationError as exc:
            if _wants_json(request):
                return _error_json(exc)
            if request.method == "GET":
                context = {"who": who, "message": exc.message}
                return render(request, "web/error.html", context, status=exc.status_code)
            messages.error(request, str(exc.message))
            return _back(request)

    return never_cache(wrapped)


def fragment(view: Callable) -> Callable:
    """A JSON answer, a fragment or a file for the page's script or an <img>: 401 when not signed in,
    every refusal in the API's error shape."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        who = session.signed(request)
        if who is None:
            return _error_json(errors.NotSignedIn())
        try:
            return view(request, who, *args, **kwargs)
        except ApplicationError as exc:
            return _error_json(exc)

    return wrapped


# --- signing in and out --------------------------------------------------------------------


@never_cache
def home(request: HttpRequest) -> HttpResponse:
    had_session = session.SESSION_KEY in request.session
    who = session.signed(request)
    if who is None:
        if had_session:
            messages.warning(request, "Your session ended: the API key was revoked or has expired.")
        return render(request, "web/sign_in.html", {"error": None})
    return _home(request, who)


def _home(request: HttpRequest, who: session.Signed) -> HttpResponse:
    session.charge(who, write=False)
    status = request.GET.get("status", "").strip()
    try:
        jobs = selectors.recent_jobs(client=who.client, status=status, page=request.GET.get("page"))
    except job_errors.InvalidFilter as exc:
        messages.error(request, f"{exc.message} Showing every status.")
        status = ""
        jobs = selectors.recent_jobs(client=who.client, status=None, page=1)
    audit_read(
        actor=who.actor(request),
        action="jobs.listed",
        details={"status": status, "returned": len(jobs.object_list), "via": "web"},
    )
    rows = [_row(job) for job in jobs.object_list]
    return render(
        request,
        "web/home.html",
        {
            "who": who,
            "jobs": jobs,
            "rows": rows,
            "status": status,
            "status_choices": STATUS_CHOICES,
            # New uploads join the list in place only where they belong: every status, first page.
            "live_list": not status and jobs.number == 1,
            "reference_max": references.MAX_LENGTH,
            "max_bytes": settings.UPLOAD_MAX_BYTES,
            "max_size": filesizeformat(settings.UPLOAD_MAX_BYTES),
            "accept": ACCEPT,
            "wait_seconds": _page_wait(),
        },
    )


def _row(job: Job) -> tuple[Job, results.Finding | None, bool]:
    """A row of the job list: the job, its highest finding, whether its weights are untrained."""
    return job, (results.findings(job) or [None])[0], results.untrained(job)


@require_POST
@never_cache
def sign_in(request: HttpRequest) -> HttpResponse:
    try:
        session.sign_in(request, request.POST.get("api_key", ""))
    except ApplicationError as exc:
        # The key is never echoed back into the page.
        return render(request, "web/sign_in.html", {"error": str(exc.message)}, status=exc.status_code)
    return redirect("web:home")


@require_POST
@never_cache
def sign_out(request: HttpRequest) -> HttpResponse:
    session.sign_out(request)
    messages.info(request, "You have signed out.")
    return redirect("web:home")


# --- uploads ----------------------------------------------------------------------------------


@require_POST
@page
def upload(request: HttpRequest, who: session.Signed) -> HttpResponse:
    """One file from the page's script (JSON), or every file of the form without script."""
    who.require_write()
    declared = (request.META.get("CONTENT_LENGTH") or "0").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > body_limit(request.path):
        raise job_errors.FileTooLarge(details={"max_bytes": settings.UPLOAD_MAX_BYTES, "size": int(declared)})
    files = request.FILES.getlist("images")
    if not files:
        raise job_errors.MissingImage("Choose at least one image to upload.")
    as_json = _wants_json(request)
    if as_json and len(files) > 1:
        raise job_errors.MultipleImages()
    given = _references(request, len(files))
    session.charge(who, write=True, cost=len(files))
    priority = request.POST.get("priority") or None
    for upload_file, reference in zip(files, given, strict=True):
        name = upload_file.name or "image"
        try:
            outcome = intake.job_create(
                client=who.client,
                upload=upload_file,
                original_filename=upload_file.name or "",
                content_type=upload_file.content_type or "",
                priority=priority,
                reference=reference,
            )
        except ApplicationError as exc:
            if as_json:
                raise
            messages.error(request, f"{name}: {exc.message}")
            continue
        job = outcome.job
        action = "job.deduplicated" if outcome.deduplicated else "job.created"
        audit_write(actor=who.actor(request), action=action, job_ids=[job.id], details={"via": "web"})
        count_upload(deduplicated=outcome.deduplicated)
        if as_json:
            body = {"job": _state(job), "deduplicated": outcome.deduplicated}
            return JsonResponse(body, status=200 if job.status == JobStatus.SUCCEEDED else 202)
        seen = " (already analysed or queued: the same job)" if outcome.deduplicated else ""
        messages.success(request, f"{name}: uploaded, {JobStatus(job.status).label}{seen}.")
    return redirect("web:home")


def _references(request: HttpRequest, count: int) -> list[str | None]:
    """The form's `reference` fields, one per file (an empty one: none), checked by the API's own
    rules before anything is stored. The form without script has one field, for one file."""
    raw = request.POST.getlist("reference")
    if not any(raw):
        return [None] * count
    if len(raw) != count:
        raise job_errors.InvalidReference(
            "Give one reference per image: upload these files one at a time to give each its own, "
            "or leave the reference empty.",
            details={"field": "reference", "references": len(raw), "images": count},
        )
    return [references.check(value, index=i) if value else None for i, value in enumerate(raw)]


def _state(job: Job) -> dict:
    return selectors.job_state(job) | {
        "reference": job.reference,
        "url": reverse("web:job", args=[job.id]),
        "panel_url": reverse("web:panel", args=[job.id]),
        "row_url": reverse("web:row", args=[job.id]),
    }


# --- one job ----------------------------------------------------------------------------------


def _panel_context(job: Job, who: session.Signed) -> dict:
    rows = results.findings(job)
    return {
        "who": who,
        "job": job,
        "state": selectors.job_state(job),
        "findings": rows,
        "chart": results.chart(rows) if rows else None,
        "provenance": results.shown_provenance(job),
        "timings": results.timings(job),
        "untrained": results.untrained(job),
        "image_available": _image_available(job),
        "wait_seconds": _page_wait(),
    }


def _page_wait() -> int:
    """How long the page's long-poll asks to wait: under common proxies' idle timeouts."""
    return max(1, min(25, settings.LONG_POLL_MAX_SECONDS))


def _image_available(job: Job) -> bool:
    return bool(job.upload) and job.image_deleted_at is None and job.status != JobStatus.DELETED


@require_GET
@page
def job_page(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    session.charge(who, write=False)
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    audit_read(actor=who.actor(request), action="job.read", job_id=job.id, details={"via": "web"})
    return render(request, "web/job.html", _panel_context(job, who))


@require_GET
@fragment
@never_cache
def panel(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    session.charge(who, write=False)
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    audit_read(actor=who.actor(request), action="job.read", job_id=job.id, details={"via": "web"})
    return render(request, "web/_job_panel.html", _panel_context(job, who))


@require_GET
@fragment
@never_cache
def row(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    """The job's row of the list, as the home page renders it: the page's script puts this page's
    uploads into "Recent jobs" with it, and renews a row when its job ends."""
    session.charge(who, write=False)
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    audit_read(actor=who.actor(request), action="job.read", job_id=job.id, details={"via": "web"})
    back = request.GET.get("next", "")
    if not (back and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure())):
        back = reverse("web:home")
    job, top, untrained = _row(job)
    context = {"who": who, "job": job, "top": top, "untrained": untrained, "next": back}
    return render(request, "web/_job_row.html", context)


@require_GET
@fragment
def thumbnail(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    """The stored image as a PNG preview. Private and revalidated on every view (no-cache + ETag):
    a shared workstation's browser cache never shows it to someone who is no longer signed in."""
    session.charge(who, write=False)
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    if not _image_available(job):
        raise errors.ImageNotAvailable()
    etag = f'"{job.id.hex}-{job.sha256[:16]}-{thumbnails.MAX_SIDE}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Cookie"}
    if if_none_match(request, etag):
        return HttpResponse(status=304, headers=headers)
    try:
        png = thumbnails.preview_of(job)
    except thumbnails.ThumbnailError as exc:
        raise errors.ImageNotAvailable("The stored image could not be read for a preview.") from exc
    audit_read(actor=who.actor(request), action="job.image_viewed", job_id=job.id, details={"via": "web"})
    return HttpResponse(png, content_type="image/png", headers=headers)


def _succeeded(who: session.Signed, job_id: str) -> Job:
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise errors.ResultNotReady(details={"status": job.status.lower()})
    return job


@require_GET
@fragment
@never_cache
def result_json(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    """The job exactly as the API's GET /api/v1/jobs/{id} list entry shows it, as a file."""
    session.charge(who, write=False)
    job = _succeeded(who, job_id)
    audit_read(
        actor=who.actor(request), action="job.read", job_id=job.id, details={"via": "web", "as": "json"}
    )
    body = JobOutputSerializer(job, context={"request": request}).data
    response = HttpResponse(json.dumps(body, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="cxrq-{job.id}.json"'
    return response


@require_GET
@fragment
@never_cache
def result_csv(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    session.charge(who, write=False)
    job = _succeeded(who, job_id)
    audit_read(
        actor=who.actor(request), action="job.read", job_id=job.id, details={"via": "web", "as": "csv"}
    )
    # The one CSV: the API's result.csv and the CLI's are this same function's output.
    response = HttpResponse(csv_export.as_csv([job]), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="cxrq-{job.id}.csv"'
    return response


@require_POST
@page
def cancel(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    who.require_write()
    session.charge(who, write=True)
    job = cancellation.job_cancel(client=who.client, job_id=job_id)
    audit_write(actor=who.actor(request), action="job.cancelled", job_ids=[job.id], details={"via": "web"})
    if job.status == JobStatus.CANCELLED:
        text = "The job was cancelled: it will not be analysed."
    else:
        text = "Cancel requested: the job is being analysed and ends cancelled, with no result."
    if _wants_json(request):
        return JsonResponse({"job": _state(job), "message": text})
    messages.success(request, text)
    return _back(request)


@require_http_methods(["GET", "HEAD", "POST"])
@page
def delete(request: HttpRequest, who: session.Signed, job_id: str) -> HttpResponse:
    """Asks first: GET (and a POST without `confirm=yes`) shows what would go and a button that
    deletes; only a POST with `confirm=yes` deletes. The page's script asks in a <dialog> and
    posts the confirmed form itself. Afterwards one message, never the job's page saying it again."""
    who.require_write()
    job = job_selectors.job_get(client=who.client, job_id=job_id)
    confirmed = request.method == "POST" and request.POST.get("confirm") == "yes"
    if not confirmed:
        if _wants_json(request):
            raise errors.ConfirmationRequired()
        return _confirm_delete(request, who, job)
    session.charge(who, write=True)
    name = _job_name(job)
    job = deletion.job_delete(client=who.client, job_id=job_id)
    audit_write(actor=who.actor(request), action="job.deleted", job_ids=[job.id], details={"via": "web"})
    text = f"{name} was deleted: its image and result are gone."
    if _wants_json(request):
        return JsonResponse({"job": _state(job), "message": text})
    messages.success(request, text)
    if request.POST.get("next", "").split("?")[0] == reverse("web:job", args=[job.id]):
        return redirect("web:home")  # the job's own page would only say it again
    return _back(request)


def _job_name(job: Job) -> str:
    """How a message names a job: its reference, else its upload time."""
    if job.reference:
        return f"The job {job.reference}"
    return f"The job uploaded {job.created_at:%Y-%m-%d %H:%M:%S} UTC"


def _confirm_delete(request: HttpRequest, who: session.Signed, job: Job) -> HttpResponse:
    source = request.POST if request.method == "POST" else request.GET
    back = source.get("next", "")
    if not (back and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure())):
        back = reverse("web:job", args=[job.id])
    context = {
        "who": who,
        "job": job,
        "name": _job_name(job),
        "next": back,
        "deletable": job.status not in (JobStatus.IN_PROGRESS, JobStatus.DELETED),
        "word": job.status.lower(),
    }
    return render(request, "web/confirm_delete.html", context)


# --- live status --------------------------------------------------------------------------------


@require_GET
@fragment
def watch(request: HttpRequest, who: session.Signed) -> HttpResponse:
    """The watched jobs' states, long-polled: `?ids=a,b&wait=N` with If-None-Match answers when
    any of them changed, or ended, or the wait ran out (then 304 when nothing changed).

    The waiting is the API's (backend/edge/waiting.py): this view marks an unchanged answer with
    X-Cxrq-Wait naming the jobs still running, the edge holds it on its event loop and asks again
    when one of them ends, or when its recheck comes round. Without the edge (a bare WSGI host) it
    is answered at once, and the page's script waits a little before it asks again.
    """
    raw_ids = [i for i in request.GET.get("ids", "").split(",") if i.strip()]
    if len(raw_ids) > selectors.MAX_WATCHED:
        raise errors.TooManyWatched(details={"max_jobs": selectors.MAX_WATCHED})
    wait = _wait_seconds(request)
    session.charge(who, write=False)
    jobs = selectors.watched_jobs(client=who.client, job_ids=raw_ids)
    states = [_state(job) for job in jobs]
    audit_read(actor=who.actor(request), action="jobs.watched", details={"jobs": len(states), "via": "web"})
    etag = selectors.states_etag(states)
    unchanged = if_none_match(request, etag)
    running = [s["id"] for s in states if not s["ended"]]
    headers = {"ETag": etag, "Cache-Control": "no-store"}
    if wait and unchanged and running:
        headers[waiting.WAIT_HEADER] = f"{','.join(running)} {wait}"
    elif unchanged:
        return HttpResponse(status=304, headers=headers)
    return JsonResponse({"jobs": states}, headers=headers)


def _wait_seconds(request: HttpRequest) -> int:
    raw = request.GET.get("wait")
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()) or int(raw) > settings.LONG_POLL_MAX_SECONDS:
        raise job_errors.InvalidWait(details={"max_seconds": settings.LONG_POLL_MAX_SECONDS})
    return int(raw)

"""GET /dicom/unscored: the instances the client's DICOM senders sent that were not scored, and why
(the page beside GET /api/v1/dicom/unscored). Read with any key; scoped to the signed-in client."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from backend.audit.services import audit_read
from backend.dicomnet import selectors as dicomnet_selectors
from backend.dicomnet.models import UnscoredReason
from backend.web import session
from backend.web.views import page

PAGE_SIZE = 50


@require_GET
@page
def unscored_page(request: HttpRequest, who: session.Signed) -> HttpResponse:
    session.charge(who, write=False)
    reason = request.GET.get("reason", "").strip()
    if reason not in UnscoredReason.values:
        reason = ""  # an unknown filter shows everything (the select offers only the known ones)
    rows = Paginator(
        dicomnet_selectors.unscored_list(client=who.client, reason=reason or None).select_related("job"),
        PAGE_SIZE,
    ).get_page(request.GET.get("page"))
    audit_read(
        actor=who.actor(request),
        action="dicom.unscored_listed",
        details={"reason": reason, "returned": len(rows.object_list), "via": "web"},
    )
    return render(
        request,
        "web/unscored.html",
        {"who": who, "rows": rows, "reason": reason, "reason_choices": UnscoredReason.choices},
    )

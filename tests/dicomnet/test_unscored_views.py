"""Where instances not scored are seen besides the API: /metrics (a counter by reason), the operator
dashboard (counts by reason, linked to the admin's list), and the web client's own page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client as BrowserClient
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backend.dicomnet import services
from backend.dicomnet.models import UnscoredInstance
from backend.dicomnet.unscored import unscored_prune
from tests.dicomnet.factories import changed, cr_chest, non_image, uids
from tests.factories import client_and_key

pytestmark = pytest.mark.django_db

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _receive(sender, data: bytes) -> services.Received:
    sop_class, sop_instance = uids(data)
    return services.instance_receive(
        sender=sender, part10=data, sop_class_uid=sop_class, sop_instance_uid=sop_instance
    )


def _a_study(sender) -> None:
    """Two laterals (one sent twice), an SR, and a PA sent twice: 3 + 1 + 1 not scored."""
    lateral = changed(cr_chest(seed=1), ViewPosition="LL")
    _receive(sender, lateral)
    _receive(sender, lateral)
    _receive(sender, changed(cr_chest(seed=2), ViewPosition="LL"))
    _receive(sender, non_image(COMPREHENSIVE_SR, modality="SR"))
    pa = cr_chest(seed=3)
    _receive(sender, pa)
    _receive(sender, pa)


def _counted(client) -> dict[str, float]:
    families = text_string_to_metric_families(client.get("/metrics").content.decode())
    return {
        s.labels["reason"]: s.value
        for family in families
        for s in family.samples
        if s.name == "cxrq_dicom_unscored_total"
    }


def test_metrics_count_each_reason_and_retention_does_not_lower_the_counter(client, sender):
    _a_study(sender)
    assert _counted(client) == {
        "not_chest_xray": 3,
        "not_an_image": 1,
        "unsupported_image": 0,
        "own_output": 0,
        "duplicate": 1,
    }
    UnscoredInstance.objects.update(last_received_at=timezone.now() - timedelta(days=3650))
    assert unscored_prune() == 4
    assert _counted(client)["not_chest_xray"] == 3


def test_the_dashboard_shows_counts_by_reason_to_job_viewers_with_a_link_to_the_list(client, sender):
    _a_study(sender)
    user = get_user_model().objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    user.groups.add(Group.objects.get(name="job viewers"))
    client.force_login(user)
    page = client.get("/admin/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    row = html[html.index('data-reason="not_chest_xray"') :].split("</tr>")[0]
    assert [cell.split("<")[0] for cell in row.split('class="num">')[1:]] == ["2", "2", "3"]
    listed = client.get("/admin/dicomnet/unscoredinstance/")
    assert listed.status_code == 200
    assert listed.content.decode().count("not a chest X-ray") >= 2


def test_the_web_client_shows_its_own_instances_and_why(settings, sender, hospital):
    settings.WEB_SIGN_IN_RATE = "0"
    _a_study(sender)
    elsewhere = services.sender_add(ae_title="ELSEWHERE", client=client_and_key("elsewhere")[0])
    _receive(elsewhere, changed(cr_chest(seed=9), BodyPartExamined="HAND"))
    browser = BrowserClient()
    assert browser.get("/dicom/unscored").status_code == 302  # not signed in: to the sign-in page
    assert browser.post("/sign-in", {"api_key": client_and_key(hospital.name)[1]}).status_code == 302
    page = browser.get("/dicom/unscored")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("data-unscored-row=") == 4
    assert "ViewPosition" in html and "Comprehensive SR Storage" in html
    assert "BodyPartExamined" not in html  # another client's
    assert "<script>" not in html  # no inline script: the page works under the project's CSP
    policy = dict(d.strip().split(" ", 1) for d in page["Content-Security-Policy"].split(";") if d.strip())
    assert "unsafe-inline" not in policy.get("script-src", policy["default-src"])
    only = browser.get("/dicom/unscored", {"reason": "duplicate"}).content.decode()
    assert only.count("data-unscored-row=") == 1 and "its job</a>" in only
    home = browser.get("/").content.decode()
    assert 'href="/dicom/unscored"' in home

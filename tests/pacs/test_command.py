"""`manage.py dicom_destination add|list|remove`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from backend.audit.models import AuditEvent
from backend.pacs.models import DicomDestination

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command("dicom_destination", *args, stdout=out)
    return out.getvalue()


def test_add_list_and_remove_a_destination(hospital):
    out = _run(
        "add",
        "main-pacs",
        "--client",
        hospital.name,
        "--ae-title",
        "PACS1",
        "--host",
        "10.20.0.7",
        "--port",
        "4242",
        "--secondary-capture",
    )
    assert "main-pacs (PACS1@10.20.0.7:4242)" in out
    destination = DicomDestination.objects.get(client=hospital, name="main-pacs")
    assert (destination.ae_title, destination.port, destination.send_secondary_capture) == (
        "PACS1",
        4242,
        True,
    )
    assert destination.calling_ae_title == "" and destination.enabled
    listed = _run("list", "--client", hospital.name)
    assert "main-pacs client=hospital-pacs ae_title=PACS1 host=10.20.0.7 port=4242" in listed
    assert "secondary_capture=True" in listed
    assert _run("remove", "main-pacs", "--client", hospital.name).strip() == "removed main-pacs"
    assert not DicomDestination.objects.exists()
    actions = AuditEvent.objects.filter(action__startswith="dicom_destination").order_by("id")
    assert list(actions.values_list("action", flat=True)) == [
        "dicom_destination.added",
        "dicom_destination.removed",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ae-title", "BAD\\TITLE", "--host", "10.0.0.1", "--port", "104"], "invalid_dicom_destination"),
        (["--ae-title", "A" * 17, "--host", "10.0.0.1", "--port", "104"], "invalid_dicom_destination"),
        (["--ae-title", "PACS", "--host", "10.0.0.1", "--port", "70000"], "invalid_dicom_destination"),
        (["--ae-title", "PACS", "--host", "", "--port", "104"], "invalid_dicom_destination"),
    ],
)
def test_an_invalid_destination_is_refused_with_its_code(hospital, args, message):
    with pytest.raises(CommandError, match=message):
        _run("add", "x", "--client", hospital.name, *args)
    assert not DicomDestination.objects.exists()


def test_a_duplicate_name_an_unknown_client_or_destination_is_refused(hospital):
    _run("add", "pacs", "--client", hospital.name, "--ae-title", "PACS", "--host", "h", "--port", "104")
    with pytest.raises(CommandError, match="dicom_destination_exists"):
        _run("add", "pacs", "--client", hospital.name, "--ae-title", "OTHER", "--host", "h", "--port", "105")
    with pytest.raises(CommandError, match="no client named 'nobody'"):
        _run("add", "pacs", "--client", "nobody", "--ae-title", "PACS", "--host", "h", "--port", "104")
    with pytest.raises(CommandError, match="no DICOM destination 'missing'"):
        _run("remove", "missing", "--client", hospital.name)

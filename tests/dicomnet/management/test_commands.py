"""`manage.py dicom_sender add|list|remove|phi-key` and `run_dicom`'s clean stop."""

from __future__ import annotations

import os
import signal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from backend.audit.models import AuditEvent
from backend.core import phi
from backend.dicomnet import services
from backend.dicomnet.models import DicomSender
from backend.jobs.models import Priority
from tests.factories import client_and_key


def run(*args: str) -> str:
    out = StringIO()
    call_command("dicom_sender", *args, stdout=out)
    return out.getvalue()


def test_add_list_remove(db):
    client, _ = client_and_key("radiology")
    assert "CR01 -> radiology (stat)" in run(
        "add", "CR01", "--client", "radiology", "--priority", "stat", "--host", "10.1.2.3"
    )
    sender = DicomSender.objects.get(ae_title="CR01")
    assert (sender.client, sender.priority, sender.allowed_host) == (client, Priority.STAT, "10.1.2.3")
    assert not sender.return_path_delete_after_delivery
    run("add", "PACS", "--client", "radiology", "--delete-after-delivery")
    assert DicomSender.objects.get(ae_title="PACS").return_path_delete_after_delivery
    listing = run("list")
    assert "CR01 client=radiology priority=stat host=10.1.2.3 enabled=True" in listing
    assert "PACS client=radiology priority=routine host=*" in listing
    assert "removed CR01" in run("remove", "CR01")
    assert not DicomSender.objects.filter(ae_title="CR01").exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"dicom_sender.added", "dicom_sender.removed"} <= actions


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "CR01", "--client", "nobody"), "no client named 'nobody'"),
        (("add", "CR\\01", "--client", "radiology"), "invalid_dicom_sender"),
        (("add", "WAYTOOLONGAETITLE1", "--client", "radiology"), "invalid_dicom_sender"),
        (("add", "CR02", "--client", "radiology", "--host", "not-an-address"), "invalid_dicom_sender"),
        (("remove", "NOSUCH"), "no DICOM sender 'NOSUCH'"),
    ],
)
def test_bad_input_is_a_clear_error(db, args, message):
    client_and_key("radiology")
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_the_same_ae_title_twice_is_refused(db):
    client_and_key("radiology")
    run("add", "CR01", "--client", "radiology")
    with pytest.raises(CommandError, match="dicom_sender_exists"):
        run("add", "CR01", "--client", "radiology")


def test_phi_key_prints_a_usable_key(db):
    key = run("phi-key").strip()
    assert len(phi.parse_key(key)) == 32


def test_the_development_mapping_is_idempotent(db):
    client, _ = client_and_key("development")
    first = services.development_sender(client=client)
    second = services.development_sender(client=client)
    assert first.pk == second.pk and first.ae_title == "STORESCU"
    assert DicomSender.objects.filter(ae_title="STORESCU").count() == 1


@pytest.mark.django_db(transaction=True)
def test_run_dicom_stops_cleanly_on_sigterm(start_scp):
    scp = start_scp()
    os.killpg(scp.proc.pid, signal.SIGTERM)
    assert scp.proc.wait(timeout=20) == 0
    assert "event=dicom_stopped" in scp.log

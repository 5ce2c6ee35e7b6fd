"""DICOM senders: add (a calling AE title -> a client, with its priority and optional address), list, remove."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from backend.audit.services import Actor, audit_write
from backend.clients.models import Client
from backend.core import phi
from backend.core.exceptions import ApplicationError
from backend.dicomnet import services
from backend.dicomnet.models import DicomSender
from backend.jobs.models import Priority


class Command(BaseCommand):
    help = "Add, list or remove the DICOM senders (calling AE titles) the receiver accepts."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="accept a calling AE title for a client")
        add.add_argument("ae_title")
        add.add_argument("--client", required=True, help="the client's name")
        add.add_argument("--priority", choices=[p.label for p in Priority], default=Priority.ROUTINE.label)
        add.add_argument("--host", default="", help="the address or network it must connect from")
        add.add_argument(
            "--delete-after-delivery",
            action="store_true",
            help="delete a job's return path (its PHI) once its result was delivered back",
        )
        sub.add_parser("list", help="list the senders")
        remove = sub.add_parser("remove", help="stop accepting a calling AE title")
        remove.add_argument("ae_title")
        sub.add_parser("phi-key", help="print a new key for CXRQ_PHI_KEY")

    def handle(self, *args, action: str, **options):
        if action == "add":
            client = Client.objects.filter(name=options["client"]).first()
            if client is None:
                raise CommandError(f"no client named {options['client']!r}")
            try:
                sender = services.sender_add(
                    ae_title=options["ae_title"],
                    client=client,
                    priority=options["priority"],
                    allowed_host=options["host"],
                    delete_after_delivery=options["delete_after_delivery"],
                )
            except ApplicationError as exc:
                raise CommandError(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from None
            audit_write(
                actor=Actor(kind="command", client_id=client.id),
                action="dicom_sender.added",
                details={"ae_title": sender.ae_title},
            )
            self.stdout.write(f"{sender.ae_title} -> {client.name} ({Priority(sender.priority).label})")
        elif action == "list":
            for sender in DicomSender.objects.select_related("client"):
                self.stdout.write(
                    f"{sender.ae_title} client={sender.client.name} priority={Priority(sender.priority).label} "
                    f"host={sender.allowed_host or '*'} enabled={sender.enabled} "
                    f"delete_after_delivery={sender.return_path_delete_after_delivery}"
                )
        elif action == "remove":
            sender = DicomSender.objects.filter(ae_title=options["ae_title"].strip()).first()
            if sender is None or not services.sender_remove(ae_title=sender.ae_title):
                raise CommandError(f"no DICOM sender {options['ae_title']!r}")
            audit_write(
                actor=Actor(kind="command", client_id=sender.client_id),
                action="dicom_sender.removed",
                details={"ae_title": sender.ae_title},
            )
            self.stdout.write(f"removed {sender.ae_title}")
        else:
            self.stdout.write(phi.new_key())

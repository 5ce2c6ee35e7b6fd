"""DICOM destinations: add (a client's PACS: AE title, host, port), list, remove."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from backend.audit.services import Actor, audit_write
from backend.clients.models import Client
from backend.core.exceptions import ApplicationError
from backend.pacs import services
from backend.pacs.models import DicomDestination


def _client(name: str) -> Client:
    client = Client.objects.filter(name=name).first()
    if client is None:
        raise CommandError(f"no client named {name!r}")
    return client


class Command(BaseCommand):
    help = "Add, list or remove the PACS (DICOM destinations) a client's results are sent to."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="send a client's results to a PACS")
        add.add_argument("name", help="how this PACS is called here (unique per client)")
        add.add_argument("--client", required=True, help="the client's name")
        add.add_argument("--ae-title", required=True, help="the PACS's AE title (called)")
        add.add_argument("--host", required=True)
        add.add_argument("--port", type=int, required=True)
        add.add_argument(
            "--calling-ae-title", default="", help="cxrq's AE title towards it (default CXRQ_DICOM_AE_TITLE)"
        )
        add.add_argument(
            "--secondary-capture", action="store_true", help="also send the findings as an image"
        )
        listing = sub.add_parser("list", help="list the destinations")
        listing.add_argument("--client", help="only this client's")
        remove = sub.add_parser("remove", help="stop sending a client's results to a PACS")
        remove.add_argument("name")
        remove.add_argument("--client", required=True)

    def handle(self, *args, action: str, **options):
        if action == "add":
            client = _client(options["client"])
            try:
                destination = services.destination_add(
                    client=client,
                    name=options["name"],
                    ae_title=options["ae_title"],
                    host=options["host"],
                    port=options["port"],
                    calling_ae_title=options["calling_ae_title"],
                    send_secondary_capture=options["secondary_capture"],
                )
            except ApplicationError as exc:
                raise CommandError(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from None
            audit_write(
                actor=Actor(kind="command", client_id=client.id),
                action="dicom_destination.added",
                details={"name": destination.name, "ae_title": destination.ae_title},
            )
            self.stdout.write(f"{client.name}: {destination}")
        elif action == "list":
            destinations = DicomDestination.objects.select_related("client")
            if options.get("client"):
                destinations = destinations.filter(client=_client(options["client"]))
            for d in destinations:
                self.stdout.write(
                    f"{d.name} client={d.client.name} ae_title={d.ae_title} host={d.host} port={d.port} "
                    f"calling_ae_title={d.calling_ae_title or '-'} secondary_capture={d.send_secondary_capture} "
                    f"enabled={d.enabled}"
                )
        else:
            client = _client(options["client"])
            if not services.destination_remove(client=client, name=options["name"]):
                raise CommandError(f"no DICOM destination {options['name']!r} for {client.name}")
            audit_write(
                actor=Actor(kind="command", client_id=client.id),
                action="dicom_destination.removed",
                details={"name": options["name"].strip()},
            )
            self.stdout.write(f"removed {options['name'].strip()}")

"""`manage.py webhook_secret CLIENT [--rotate]`: print the client's webhook signing secret (alone on
the last line), or replace it with a new one first. Its receivers verify with it (docs/api.md)."""

from django.core.management.base import BaseCommand, CommandError

from backend.audit.services import Actor, audit_write
from backend.clients import services
from backend.clients.models import Client


class Command(BaseCommand):
    help = "Print a client's webhook signing secret; --rotate replaces it first (the old one stops at once)."

    def add_arguments(self, parser):
        parser.add_argument("client")
        parser.add_argument("--rotate", action="store_true")

    def handle(self, *args, client: str, rotate: bool, **options):
        found = Client.objects.filter(name=client).first()
        if found is None:
            raise CommandError(f"no client named {client!r}")
        if rotate:
            services.webhook_secret_rotate(client=found)
            audit_write(actor=Actor(kind="command", client_id=found.id), action="webhook_secret.rotated")
            self.stdout.write(f"new webhook secret for {found.name}; the old one no longer signs:")
        else:
            self.stdout.write(f"webhook secret for {found.name}:")
        self.stdout.write(found.webhook_secret)

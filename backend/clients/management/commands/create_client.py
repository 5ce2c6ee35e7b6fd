"""Create a client with its first API key. The key is printed once, alone on the last line."""

from django.core.management.base import BaseCommand, CommandError

from backend.audit.services import Actor, audit_write
from backend.clients import services
from backend.clients.models import Scope


class Command(BaseCommand):
    help = "Create a client (a hospital, department or application) and print its first API key."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.SUBMIT)
        parser.add_argument("--key-name", default="default")

    def handle(self, *args, name: str, scope: str, key_name: str, **options):
        try:
            client, issued = services.client_create(name=name, key_name=key_name, scope=scope)
        except services.ClientExists as exc:
            raise CommandError(f"a client named {name!r} exists; add a key with `client_keys add`") from exc
        details = {"prefix": issued.api_key.prefix, "scope": scope}
        audit_write(
            actor=Actor(kind="command", client_id=client.id), action="client.created", details=details
        )
        self.stdout.write(
            f"client {client.name} ({client.id}), key {issued.api_key.prefix} ({scope}); the key, shown once:"
        )
        self.stdout.write(issued.key)

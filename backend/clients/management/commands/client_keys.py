"""A client's API keys: add (printed once, alone on the last line), list, revoke."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from backend.audit.services import Actor, audit_write
from backend.clients import services
from backend.clients.models import ApiKey, Client, Scope


class Command(BaseCommand):
    help = "Add, list or revoke a client's API keys. Rotate: add a key, move callers, revoke the old one."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a key and print it once")
        add.add_argument("client")
        add.add_argument("--name", default="key")
        add.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.SUBMIT)
        add.add_argument("--expires-days", type=float, help="the key stops working after this many days")
        listing = sub.add_parser("list", help="list keys (prefix, name, scope, state); never their values")
        listing.add_argument("client")
        revoke = sub.add_parser("revoke", help="revoke a key for good, by its prefix")
        revoke.add_argument("client")
        revoke.add_argument("prefix")

    def handle(self, *args, action: str, client: str, **options):
        found = Client.objects.filter(name=client).first()
        if found is None:
            raise CommandError(f"no client named {client!r}")
        if action == "add":
            days = options.get("expires_days")
            expires = timezone.now() + timedelta(days=days) if days else None
            issued = services.api_key_create(
                client=found, name=options["name"], scope=options["scope"], expires_at=expires
            )
            details = {"prefix": issued.api_key.prefix, "scope": issued.api_key.scope}
            audit_write(
                actor=Actor(kind="command", client_id=found.id), action="key.created", details=details
            )
            self.stdout.write(
                f"key {issued.api_key.prefix} ({issued.api_key.scope}) for {found.name}; shown once:"
            )
            self.stdout.write(issued.key)
        elif action == "list":
            for key in ApiKey.objects.filter(client=found).order_by("created"):
                state = "revoked" if key.revoked else "expired" if key.has_expired else "live"
                expires = key.expiry_date.isoformat() if key.expiry_date else "-"
                used = key.last_used_at.isoformat() if key.last_used_at else "-"
                self.stdout.write(
                    f"{key.prefix} {state} scope={key.scope} name={key.name} expires={expires} last_used={used}"
                )
        elif not services.api_key_revoke(client=found, prefix=options["prefix"]):
            raise CommandError(f"{found.name} has no live key {options['prefix']!r}")
        else:
            details = {"prefix": options["prefix"]}
            audit_write(
                actor=Actor(kind="command", client_id=found.id), action="key.revoked", details=details
            )
            self.stdout.write(f"revoked {options['prefix']}")

"""Clients and their keys: create, add a key, revoke. A key's value exists only in the return
value of these functions (shown once); the database keeps its hash."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction

from backend.clients import selectors
from backend.clients.models import ApiKey, Client, Scope, new_webhook_secret
from backend.core.exceptions import ApplicationError


class ClientExists(ApplicationError):
    code = "client_exists"
    status_code = 409
    default_message = "A client with this name exists."


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # the only copy of the secret: give it to the caller, never store it


def client_create(
    *, name: str, key_name: str = "default", scope: str = Scope.SUBMIT
) -> tuple[Client, IssuedKey]:
    with transaction.atomic():
        if Client.objects.filter(name=name).exists():
            raise ClientExists(details={"name": name})
        client = Client.objects.create(name=name)
        return client, api_key_create(client=client, name=key_name, scope=scope)


def api_key_create(
    *, client: Client, name: str, scope: str = Scope.SUBMIT, expires_at: datetime | None = None
) -> IssuedKey:
    api_key, key = ApiKey.objects.create_key(
        client=client, name=name, scope=Scope(scope), expiry_date=expires_at
    )
    return IssuedKey(api_key=api_key, key=key)


def api_key_revoke(*, client: Client, prefix: str) -> bool:
    """Revoke one of this client's keys (for good). False when it has no such live key."""
    return ApiKey.objects.filter(client=client, prefix=prefix, revoked=False).update(revoked=True) == 1


def webhook_secret_rotate(*, client: Client) -> str:
    """A new signing secret for the client's webhooks; deliveries signed from now on use it."""
    client.webhook_secret = new_webhook_secret()
    client.save(update_fields=["webhook_secret"])
    return client.webhook_secret


def development_key(*, path: Path) -> str:
    """The development client's key, kept in `path` (mode 0600) so that a restart keeps it.
    For `make run` only: development settings name the file, production settings none."""
    if path.is_file():
        key = path.read_text().strip()
        if selectors.usable_api_key(key) is not None:
            return key
    client, _ = Client.objects.get_or_create(name="development")
    issued = api_key_create(client=client, name="make run")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(issued.key + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return issued.key

"""create_client and client_keys: a key printed once, alone on the last line; keys listed by prefix only."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from backend.clients import services
from backend.clients.models import ApiKey
from tests.factories import authorization, png_bytes, post_image

pytestmark = pytest.mark.django_db


def _run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_client_prints_a_working_key_on_its_last_line(anonymous_api):
    key = _run("create_client", "st-mary")[-1]
    response = anonymous_api.get(
        "/api/v1/jobs", **{"HTTP_" + k.upper(): v for k, v in authorization(key).items()}
    )
    assert response.status_code == 200
    with pytest.raises(CommandError, match="exists"):
        call_command("create_client", "st-mary", stdout=StringIO())


def test_client_keys_add_list_revoke():
    first = _run("create_client", "st-john")[-1]
    second = _run("client_keys", "add", "st-john", "--name", "rotation", "--scope", "read")[-1]
    listing = "\n".join(_run("client_keys", "list", "st-john"))
    assert first.partition(".")[0] in listing and second.partition(".")[0] in listing
    assert first not in listing and second not in listing  # values are never shown again
    assert "scope=read" in listing
    _run("client_keys", "revoke", "st-john", first.partition(".")[0])
    assert f"{first.partition('.')[0]} revoked" in "\n".join(_run("client_keys", "list", "st-john"))
    with pytest.raises(CommandError):
        call_command("client_keys", "revoke", "st-john", first.partition(".")[0], stdout=StringIO())


def test_keys_rest_only_as_hashes():
    _, issued = services.client_create(name="hashes")
    row = ApiKey.objects.get(prefix=issued.api_key.prefix)
    secret = issued.key.partition(".")[2]
    assert secret not in row.hashed_key and secret not in row.id
    assert row.hashed_key.startswith("sha512$$")


def test_the_development_key_file_is_private_and_kept_across_restarts(tmp_path):
    path = tmp_path / "var" / "dev-api-key"
    key = services.development_key(path=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == key
    assert services.development_key(path=path) == key  # the next start reuses it
    services.api_key_revoke(client=ApiKey.objects.get(prefix=key.partition(".")[0]).client, prefix=key[:8])
    assert services.development_key(path=path) != key  # a dead key is replaced


@pytest.mark.django_db(transaction=True)
def test_no_key_appears_in_a_full_database_dump_or_the_logs(anonymous_api, caplog):
    """Keys made, used, rotated and revoked, then the whole database dumped (pg_dump, or
    SQLite's own dump): no key and no secret appear; only the prefixes, by design."""
    keys = [_run("create_client", "dumped")[-1]]
    keys.append(_run("client_keys", "add", "dumped", "--name", "second", "--scope", "read")[-1])
    for key in keys:
        assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200
    post_image(anonymous_api, png_bytes(seed=3), HTTP_AUTHORIZATION=f"Api-Key {keys[0]}")
    _run("client_keys", "revoke", "dumped", keys[1].partition(".")[0])

    db = connection.settings_dict
    if connection.vendor == "postgresql":
        out = subprocess.run(
            ["pg_dump", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
            capture_output=True,
            text=True,
            check=True,
        )
        dump = out.stdout
    else:
        with sqlite3.connect(db["NAME"]) as raw:
            dump = "\n".join(raw.iterdump())
    assert "dumped" in dump and keys[0].partition(".")[0] in dump  # the dump has the rows
    for key in keys:
        secret = key.partition(".")[2]
        assert secret not in dump and secret not in caplog.text


def test_webhook_secret_prints_the_signing_secret_and_rotates_it():
    client, _ = services.client_create(name="st-mary")
    secret = _run("webhook_secret", "st-mary")[-1]
    assert secret == client.webhook_secret and secret.startswith("whsec_")
    rotated = _run("webhook_secret", "st-mary", "--rotate")[-1]
    client.refresh_from_db()
    assert rotated == client.webhook_secret != secret
    assert services.client_create(name="st-john")[0].webhook_secret not in (secret, rotated)  # each its own
    with pytest.raises(CommandError):
        _run("webhook_secret", "nobody")

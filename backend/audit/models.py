"""The audit log: who did what to which job, when, from where. Append-only.

It names actors and jobs by id and never holds image bytes, probabilities,
file names or anything else a job carries. Rows are never updated or deleted:
the admin offers neither, and on PostgreSQL a trigger refuses both (the
migration), for everyone including superusers and the database's own owner
role when it goes through the ORM.
"""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=32, db_index=True)
    # The actor: a client's API key (client id + key prefix), an admin user, or a command.
    actor = models.CharField(max_length=16)
    client_id = models.UUIDField(null=True, blank=True, db_index=True)
    api_key_prefix = models.CharField(max_length=8, blank=True)
    user = models.CharField(max_length=150, blank=True)
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # Counts and filters only (how many jobs a list returned, which status it asked for).
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.job_id or ''}"

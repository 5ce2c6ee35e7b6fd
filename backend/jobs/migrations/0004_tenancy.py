"""Jobs belong to a client; dedup and Idempotency-Keys are per client.

Jobs that exist before this migration are given to a client named
"pre-tenancy" (created only when there are such jobs); an operator renames it
or gives it keys. In-flight Idempotency-Key records are dropped: they live for
one request's retries, and their new shape is per client.
"""

import django.db.models.deletion
from django.db import migrations, models


def assign_existing_jobs(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    Client = apps.get_model("clients", "Client")
    if Job.objects.filter(client__isnull=True).exists():
        client, _ = Client.objects.get_or_create(name="pre-tenancy")
        Job.objects.filter(client__isnull=True).update(client=client)


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0001_initial"),
        ("jobs", "0003_reliability"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="job", name="job_unique_live_sha256_model"),
        migrations.RemoveIndex(model_name="job", name="job_created_idx"),
        migrations.AddField(
            model_name="job",
            name="client",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="jobs", to="clients.client"
            ),
        ),
        migrations.RunPython(assign_existing_jobs, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="job",
            name="client",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="jobs", to="clients.client"
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "FAILED"), _negated=True),
                fields=("client", "sha256", "model_version"),
                name="job_unique_live_client_sha256_model",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["client", "-created_at"], name="job_client_created_idx"),
        ),
        migrations.DeleteModel(name="IdempotencyKey"),
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=255)),
                ("request_sha256", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                (
                    "client",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="idempotency_keys",
                        to="clients.client",
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="idempotency_keys",
                        to="jobs.job",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("client", "key"), name="idempotency_key_per_client")
                ]
            },
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("clients", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="client",
            name="max_queued_jobs",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Jobs this client may have waiting at once (429 client_queue_full past it). "
                "Empty: CXRQ_CLIENT_MAX_QUEUED_JOBS; 0: no cap.",
                null=True,
            ),
        ),
    ]

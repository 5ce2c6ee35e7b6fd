from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0005_client_eligibility"),
    ]

    operations = [
        migrations.AddField(
            model_name="client",
            name="webhook_payload_format",
            field=models.CharField(
                choices=[
                    ("job", "job: the job as the API shows it"),
                    ("fhir", "fhir: a FHIR R4 DiagnosticReport"),
                ],
                default="job",
                help_text="What this client's webhooks carry: the job's JSON, or its result as a FHIR "
                "DiagnosticReport (backend/interop/fhir.py).",
                max_length=8,
            ),
        ),
    ]

from django.db import migrations, models

# Append-only on PostgreSQL: UPDATE and DELETE raise, whoever asks. (SQLite, the embedded
# development default, relies on the admin and the services, which never change a row.)
APPEND_ONLY = """
CREATE FUNCTION audit_auditevent_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_auditevent_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
FOR EACH ROW EXECUTE FUNCTION audit_auditevent_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_auditevent_append_only();
"""


def append_only(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY)


def drop_append_only(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(db_index=True)),
                ("action", models.CharField(db_index=True, max_length=32)),
                ("actor", models.CharField(max_length=16)),
                ("client_id", models.UUIDField(blank=True, db_index=True, null=True)),
                ("api_key_prefix", models.CharField(blank=True, max_length=8)),
                ("user", models.CharField(blank=True, max_length=150)),
                ("job_id", models.UUIDField(blank=True, db_index=True, null=True)),
                ("address", models.GenericIPAddressField(blank=True, null=True)),
                ("request_id", models.CharField(blank=True, max_length=64)),
                ("details", models.JSONField(blank=True, default=dict)),
            ],
            options={"ordering": ["-at", "-id"]},
        ),
        migrations.RunPython(append_only, drop_append_only),
    ]

"""Two admin groups: "job viewers" look at jobs, results, workers and clients; "job operators"
may also requeue and fail jobs (jobs.operate_job). Staff users are put in one of them."""

from django.db import migrations

VIEWERS = "job viewers"
OPERATORS = "job operators"


def make_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations by default; make these apps' now.
    for label in ("jobs", "clients"):
        config = apps.get_app_config(label)
        config.models_module = True  # historical app configs have none: create_permissions would skip them
        create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.filter(content_type__app_label__in=["jobs", "clients"], codename__startswith="view_")
    operate = Permission.objects.filter(content_type__app_label="jobs", codename="operate_job")
    viewers, _ = Group.objects.get_or_create(name=VIEWERS)
    viewers.permissions.set(view)
    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    operators.permissions.set(view | operate)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWERS, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("clients", "0002_client_max_queued_jobs"),
        ("jobs", "0005_operate_permission"),
    ]

    operations = [migrations.RunPython(make_groups, remove_groups)]

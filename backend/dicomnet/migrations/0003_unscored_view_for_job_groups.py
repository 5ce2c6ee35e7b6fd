"""The admin groups that read jobs ("job viewers", "job operators": backend/jobs/migrations/0006) may
also read the unscored instances the operator dashboard links to."""

from django.db import migrations

GROUPS = ("job viewers", "job operators")


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    config = apps.get_app_config("dicomnet")
    config.models_module = True  # historical app configs have none: create_permissions would skip them
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="dicomnet", codename="view_unscoredinstance")
    for group in Group.objects.filter(name__in=GROUPS):
        group.permissions.add(view)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.filter(content_type__app_label="dicomnet", codename="view_unscoredinstance")
    for group in apps.get_model("auth", "Group").objects.filter(name__in=GROUPS):
        group.permissions.remove(*view)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("jobs", "0006_admin_groups"),
        ("dicomnet", "0002_unscored_instances"),
    ]

    operations = [migrations.RunPython(grant, revoke)]

"""`manage.py purge_expired`: delete stored images and results past their retention (for cron; the
dispatcher also runs it every CXRQ_PURGE_INTERVAL_SECONDS). Prints what it deleted."""

from django.core.management.base import BaseCommand

from backend.jobs.services.deletion import purge_expired


class Command(BaseCommand):
    help = "Delete images and results past their retention window (backend/jobs/services/deletion.py)."

    def handle(self, *args, **options):
        outcome = purge_expired()
        self.stdout.write(f"images_deleted={outcome.images_deleted} jobs_deleted={outcome.jobs_deleted}")

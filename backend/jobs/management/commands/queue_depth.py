"""`manage.py queue_depth`: the number worker autoscaling scales on (jobs queued or in progress),
or with `--sql` the query that counts it, to paste into a scaler's configuration. The Kubernetes
manifests (deploy/k8s) carry this query; the tests check that they carry it unchanged."""

from django.core.management.base import BaseCommand

from backend.jobs import selectors


class Command(BaseCommand):
    help = "Print the autoscaling queue depth (jobs queued or in progress), or with --sql its query."

    def add_arguments(self, parser):
        parser.add_argument("--sql", action="store_true", help="print the query instead of running it")

    def handle(self, *args, sql: bool, **options):
        self.stdout.write(selectors.QUEUE_DEPTH_SQL if sql else str(selectors.scaling_queue_depth()))

"""Verify the job table's invariants; exit 1 on any violation (for cron, CI and tests)."""

import json

from django.core.management.base import BaseCommand, CommandError

from backend.jobs.invariants import check_invariants


class Command(BaseCommand):
    help = "Check job invariants: leases, one result per success, attempts <= max, no dedup duplicates."

    def add_arguments(self, parser):
        parser.add_argument(
            "--lease-grace", type=float, default=0.0, help="seconds of lease expiry tolerated"
        )

    def handle(self, *args, lease_grace: float, **options):
        report = check_invariants(lease_grace_seconds=lease_grace)
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.ok:
            raise CommandError("job invariants violated")

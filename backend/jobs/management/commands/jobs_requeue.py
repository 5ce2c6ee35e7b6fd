"""Operator tool: requeue stuck or failed jobs, or fail them for good."""

import uuid

from django.core.management.base import BaseCommand, CommandError

from backend.audit.actors import COMMAND
from backend.audit.services import audit_write
from backend.jobs import selectors
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import operators


class Command(BaseCommand):
    help = (
        "Requeue (default) or --fail jobs, chosen by --ids or by --stuck-minutes "
        "(IN_PROGRESS with a lease expired that long ago) or --queued-minutes. --dry-run lists them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--ids", nargs="*", default=[])
        parser.add_argument("--stuck-minutes", type=float)
        parser.add_argument("--queued-minutes", type=float)
        parser.add_argument(
            "--include-failed", action="store_true", help="with --ids: also requeue FAILED jobs"
        )
        parser.add_argument("--fail", metavar="REASON", help="fail the jobs with this reason instead")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, ids, stuck_minutes, queued_minutes, include_failed, fail, dry_run, **options):
        selected: list[uuid.UUID] = []
        try:
            selected += [uuid.UUID(i) for i in ids]
        except ValueError as exc:
            raise CommandError(f"bad job id: {exc}") from exc
        if stuck_minutes is not None:
            selected += selectors.expired_leases(older_than_seconds=stuck_minutes * 60).values_list(
                "id", flat=True
            )
        if queued_minutes is not None:
            selected += selectors.queued_jobs(waiting_seconds=queued_minutes * 60).values_list(
                "id", flat=True
            )
        if not selected:
            raise CommandError("no jobs selected: give --ids, --stuck-minutes or --queued-minutes")
        selected = list(dict.fromkeys(selected))
        if dry_run:
            for job in Job.objects.filter(id__in=selected):
                self.stdout.write(f"{job.id} {job.status} attempts={job.attempts} {job.error_code}")
            return
        if fail:
            n = operators.job_fail_by_operator(job_ids=selected, reason=fail)
            audit_write(
                actor=COMMAND, action="job.failed_by_operator", job_ids=selected, details={"failed": n}
            )
            self.stdout.write(f"failed {n} of {len(selected)} jobs")
            return
        statuses = (JobStatus.QUEUED, JobStatus.IN_PROGRESS) + ((JobStatus.FAILED,) if include_failed else ())
        done = operators.job_requeue(job_ids=selected, statuses=statuses)
        audit_write(actor=COMMAND, action="job.requeued", job_ids=done)
        self.stdout.write(f"requeued {len(done)} of {len(selected)} jobs")

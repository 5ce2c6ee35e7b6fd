"""`make claim-cost`: what one batch claim costs on PostgreSQL with many jobs queued over many clients.

Creates a scratch database on the PostgreSQL server of DATABASE_URL (default 127.0.0.1:5432),
migrates it, queues JOBS rows spread round-robin over CLIENTS clients (rows inserted in bulk: this
measures the claim, not intake), then times `claims.job_claim_batch` at the given batch size, one
claimer, giving each batch back with `claims.job_release` so the queue stays full. Prints one line
per queue size and a JSON line; drops the database. The database and seeding are tools/capacity.py's
(`make capacity`: the same claim under concurrency, with stores, uploads and where it saturates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid

from tools.capacity import queue_jobs, scratch_database, server_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()

    name = f"cxrq_claimcost_{uuid.uuid4().hex[:8]}"
    # Each release sends a wake-up: into a folder of the run's own, not a broker anyone reads.
    broker = tempfile.TemporaryDirectory(prefix="cxrq-claimcost-")
    env = {"CXRQ_LOG_LEVEL": "WARNING", "CELERY_BROKER_URL": "filesystem://", "CXRQ_BROKER_DIR": broker.name}
    with broker, scratch_database(name, server=server_url(), env=env):
        from django.db import connection

        from backend.clients.models import Client
        from backend.jobs.model_identity import current_model_version
        from backend.jobs.services import claims

        clients = Client.objects.bulk_create([Client(name=f"client-{i}") for i in range(args.clients)])
        version, rows, results = current_model_version(), 0, []
        for target in sorted(args.jobs):
            queue_jobs(clients, target - rows, first=rows)
            rows = target
            with connection.cursor() as cur:
                cur.execute("ANALYZE jobs_job")
            times = []
            for _ in range(args.claims):
                started = time.perf_counter()
                batch = claims.job_claim_batch(worker_id="bench", model_version=version, max_size=args.batch)
                times.append((time.perf_counter() - started) * 1000)
                assert len(batch.jobs) == args.batch
                claims.job_release(job_ids=batch.job_ids, claim_token=batch.claim_token)
            times.sort()
            row = {
                "queued": target,
                "clients": args.clients,
                "batch": args.batch,
                "claim_ms_p50": round(statistics.median(times), 2),
                "claim_ms_p95": round(times[int(len(times) * 0.95) - 1], 2),
            }
            results.append(row)
            print(
                f"{target:>7} queued over {args.clients} clients, batch {args.batch}: "
                f"claim p50 {row['claim_ms_p50']} ms, p95 {row['claim_ms_p95']} ms"
            )
        print(json.dumps(results))


if __name__ == "__main__":
    main()

"""`make claim-cost`: what one batch claim costs on PostgreSQL with many jobs queued over many clients.

Creates a scratch database on the PostgreSQL of DATABASE_URL's server (default
127.0.0.1:5432), migrates it, queues JOBS rows spread round-robin over CLIENTS
clients (rows inserted in bulk: this measures the claim, not intake), then times
`claims.job_claim_batch` at the given batch size, giving each batch back with
`claims.job_release` so the queue stays full. Prints one line per queue size and
a JSON line; drops the database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import psycopg2

SERVER = "postgres://postgres@127.0.0.1:5432"


def _admin(sql: str) -> None:
    conn = psycopg2.connect(f"{SERVER}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()

    name = f"cxrq_claimcost_{uuid.uuid4().hex[:8]}"
    _admin(f"CREATE DATABASE {name}")
    os.environ.update(DJANGO_SETTINGS_MODULE="backend.settings.dev", DATABASE_URL=f"{SERVER}/{name}")
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from backend.clients.models import Client
        from backend.jobs.model_identity import current_model_version
        from backend.jobs.models import Job
        from backend.jobs.services import claims

        call_command("migrate", verbosity=0)
        clients = Client.objects.bulk_create([Client(name=f"client-{i}") for i in range(args.clients)])
        version, rows, results = current_model_version(), 0, []
        for target in sorted(args.jobs):
            Job.objects.bulk_create(
                [
                    Job(
                        client=clients[i % len(clients)],
                        sha256=uuid.uuid4().hex * 2,
                        model_version=version,
                        upload=f"x/{i}.png",
                        image_format="PNG",
                    )
                    for i in range(rows, target)
                ],
                batch_size=5_000,
            )
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
    finally:
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()

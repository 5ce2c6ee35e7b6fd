"""`make capacity`: how many jobs one PostgreSQL hands out and takes back per second, and what stops it.

Creates its own database on the PostgreSQL server of DATABASE_URL (default 127.0.0.1:5432; never
the database DATABASE_URL names), migrates it, and queues jobs over CLIENTS clients the way a
backlog looks: client sizes skewed (client k sends in proportion to 1/(k+1)), a share of them STAT,
created_at spread over the last SPREAD seconds (so routine jobs older than
CXRQ_PRIORITY_PROMOTION_SECONDS count as STAT, as in production). Rows are inserted in bulk: this
measures the claim, not intake. For each queue size (default 2,000, the shipped
CXRQ_MAX_QUEUE_DEPTH, then 100,000), each step in separate processes (forked after Django's setup:
threads would measure the GIL) for DURATION seconds or until the queue drains:

  claim    N processes loop the shipped claim, `claims.job_claim_batch(max_size=B)` (fair share,
           priority, FOR UPDATE SKIP LOCKED), and leave what they claimed IN_PROGRESS;
  cycle    a worker's database work for a batch, inference excluded: the queue-depth look the
           batch loop makes before each claim, the claim, and the shipped
           `claims.job_store_results` with synthetic outcomes of a real result's shape;
  upload   K processes loop the intake service, `intake.job_create` (dedup, backpressure, image
           check, the file stored, the wake-up sent to the broker), with distinct real-size PNGs.
           The service, not HTTP: `make loadtest` measures the whole platform over HTTP.

Between steps the queue is put back to full (one UPDATE, results deleted, VACUUM ANALYZE). After
each step it checks that no job was claimed twice (every claimed id and claim token is distinct,
and the database's IN_PROGRESS + SUCCEEDED rows and result rows match the counts), and counts the
short claims (fewer than B jobs, or none, while jobs were still queued).

What saturates, per step: CPU seconds (psutil) of this database's backends plus PostgreSQL's own
processes, of the bench processes, of the broker (redis-server) and of the whole machine (what is
left is other load), and what the backends wait on (pg_stat_activity sampled every 0.2 s: running,
heavyweight lock, LWLock, IO, waiting for the client). When the bench and PostgreSQL share one
machine, N claimers and the database contend for the same cores: the figures to carry to another
machine are per database CPU-second (jobs per database core), not the raw ceiling. The model line:
worker cores fed = results/s over the engine's images/s per core (docs/performance.md).

Prints a table and, last, one JSON line (also to --out); drops the database, its media folder and
its broker queue. docs/scaling.md has the figures and the model drawn from them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PNG = ROOT / "tests" / "data" / "cxr" / "00000001_000.png"
# The engine's throughput per worker process (docs/performance.md, `make bench --no-cold-start` on
# the 2-core Xeon: the default configuration, 32.2 images/s, both cores busy).
ENGINE_IMG_S = 32.2
ENGINE_CORES = 2
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"


def server_url() -> str:
    """The PostgreSQL server of DATABASE_URL (user, host, port), without its database name."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return DEFAULT_SERVER
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def admin(sql: str, *, server: str, database: str = "postgres") -> None:
    conn = psycopg2.connect(f"{server}/{database}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def database_exists(name: str, *, server: str) -> bool:
    conn = psycopg2.connect(f"{server}/postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        found = cur.fetchone() is not None
    conn.close()
    return found


@contextlib.contextmanager
def scratch_database(name: str, *, server: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """A database of its own on `server`, migrated, with Django set up on it; dropped at the end."""
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"database name {name!r}: letters, digits and _ only")
    admin(f"CREATE DATABASE {name}", server=server)
    os.environ.update(env or {})
    os.environ.update(DJANGO_SETTINGS_MODULE="backend.settings.dev", DATABASE_URL=f"{server}/{name}")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield
    finally:
        from django.db import connections

        connections.close_all()
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", server=server)


def queue_jobs(
    clients: list,
    count: int,
    *,
    first: int = 0,
    weights: list[float] | None = None,
    stat_share: float = 0.0,
    spread_seconds: float = 0.0,
    seed: int = 0,
) -> None:
    """Insert `count` QUEUED jobs (numbered from `first`) for the current model version, in one
    INSERT ... SELECT over generate_series: 100,000 rows in seconds, where bulk_create spends most
    of a minute preparing values in Python.

    Every column not set here takes its model field's default, prepared by Django, so the rows
    follow the model. Clients round-robin, or drawn in proportion to `weights`; STAT with
    probability `stat_share`; created_at uniform over the last `spread_seconds` (0: stamped at
    insert, in order, as uploads are). No files: the claim never opens one.
    """
    from django.db import connection

    from backend.jobs.model_identity import current_model_version
    from backend.jobs.models import Job, Priority

    if count <= 0:
        return
    if weights:
        # 1,000 slots shared out by weight: a row's client is a random slot's.
        total = sum(weights)
        slots = [
            str(c.pk)
            for c, w in zip(clients, weights, strict=True)
            for _ in range(max(1, round(1000 * w / total)))
        ]
        client_sql = "(%s::uuid[])[1 + floor(random() * %s)::int]"
        client_params: list = [slots, len(slots)]
    else:
        client_sql = "(%s::uuid[])[1 + g.i %% %s]"
        client_params = [[str(c.pk) for c in clients], len(clients)]
    varying = {
        "id": ("gen_random_uuid()", []),
        "client_id": (client_sql, client_params),
        "priority": (
            "CASE WHEN random() < %s THEN %s ELSE %s END",
            [stat_share, int(Priority.STAT), int(Priority.ROUTINE)],
        ),
        "sha256": ("md5(random()::text) || md5(g.i::text)", []),
        "model_version": ("%s", [current_model_version()]),
        "upload": ("'x/' || g.i || '.png'", []),
        "image_format": ("'PNG'", []),
        "size_bytes": ("180000", []),
        "created_at": (
            "now() - random() * %s * interval '1 second'" if spread_seconds else "clock_timestamp()",
            [spread_seconds] if spread_seconds else [],
        ),
    }
    columns, exprs, params = [], [], []
    for field in Job._meta.concrete_fields:
        columns.append(connection.ops.quote_name(field.column))
        if field.column in varying:
            sql, values = varying[field.column]
            exprs.append(sql)
            params.extend(values)
        else:
            exprs.append("%s")
            # What Django would insert for an unset field: its default, "" or None.
            params.append(field.get_db_prep_save(field.get_default(), connection))
    with connection.cursor() as cur:
        cur.execute("SELECT setseed(%s)", [((seed + first) % 1000) / 1000])
        cur.execute(
            f"INSERT INTO {Job._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(exprs)} FROM generate_series(%s, %s) AS g(i)",
            [*params, first, first + count - 1],
        )


# --- measuring a step ------------------------------------------------------------------------


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def _named(name: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]


class _Probe:
    """CPU of the database (its backends and PostgreSQL's own processes), the bench processes, the
    broker and the machine over a step, and what the backends wait on, sampled."""

    WAITS = ("running", "lock", "lwlock", "io", "client", "other")

    def __init__(self, *, server: str, database: str, bench_pids: list[int], backend_pids: list[int]):
        self.server, self.database = server, database
        self.bench_pids, self.backend_pids = bench_pids, backend_pids
        self.waits: Counter[str] = Counter()
        self._stop = threading.Event()
        conn = psycopg2.connect(f"{server}/postgres")
        with conn.cursor() as cur:
            # PostgreSQL's own processes (WAL writer, checkpointer, autovacuum, ...): they work for
            # every database on the server, this one included.
            cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'")
            self.aux_pids = [r[0] for r in cur.fetchall()]
        conn.close()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "backends": _cpu_seconds(self.backend_pids),
            "aux": _cpu_seconds(self.aux_pids),
            "postgres": _cpu_seconds(_named("postgres")),
            "bench": _cpu_seconds(self.bench_pids),
            "broker": _cpu_seconds(_named("redis-server")),
            "machine": psutil.cpu_times(),
            "at": time.monotonic(),
        }

    def _sample(self) -> None:
        conn = psycopg2.connect(f"{self.server}/postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(0.2):
                    cur.execute(
                        "SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = ANY(%s)",
                        [self.backend_pids],
                    )
                    for state, wait in cur.fetchall():
                        if state == "active" and wait is None:
                            self.waits["running"] += 1
                        elif wait in ("Lock", "LWLock", "IO"):
                            self.waits[wait.lower()] += 1
                        elif wait == "Client" or state in ("idle", "idle in transaction"):
                            self.waits["client"] += 1
                        else:
                            self.waits["other"] += 1
        finally:
            conn.close()

    def start(self) -> None:
        self.before = self._snapshot()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        after = self._snapshot()
        self._stop.set()
        self._thread.join(timeout=5)
        before = self.before
        wall = after["at"] - before["at"]

        def cores(key: str) -> float:
            # A process that appeared during the step counts from its start.
            spent = sum(v - before[key].get(pid, 0.0) for pid, v in after[key].items())
            return spent / wall

        m0, m1 = before["machine"], after["machine"]
        idle = (m1.idle - m0.idle) + (getattr(m1, "iowait", 0) - getattr(m0, "iowait", 0))
        total = sum(m1) - sum(m0)
        machine_busy = psutil.cpu_count() * (total - idle) / total if total else 0.0
        db = cores("backends") + cores("aux")
        postgres_all = cores("postgres")
        bench, broker = cores("bench"), cores("broker")
        samples = sum(self.waits.values()) or 1
        return {
            "db_cores": round(db, 3),
            "postgres_other_dbs_cores": round(max(postgres_all - db, 0.0), 3),
            "bench_cores": round(bench, 3),
            "broker_cores": round(broker, 3),
            "machine_busy_cores": round(machine_busy, 3),
            "other_load_cores": round(max(machine_busy - postgres_all - bench - broker, 0.0), 3),
            "backend_waits": {k: round(self.waits[k] / samples, 3) for k in self.WAITS},
            "cpu_seconds_db": round(db * wall, 3),
        }


def verdict(probe: dict[str, Any], *, cores: int) -> str:
    """Which resource the step ran into, from the probe's figures."""
    waits = probe["backend_waits"]
    if waits["lock"] + waits["lwlock"] >= 0.25:
        return "database locks"
    if probe["machine_busy_cores"] >= 0.85 * cores:
        users = {
            "database CPU": probe["db_cores"],
            "client CPU": probe["bench_cores"],
            "broker CPU": probe["broker_cores"],
            "other load on the machine": probe["other_load_cores"] + probe["postgres_other_dbs_cores"],
        }
        return f"machine CPU full; most to {max(users, key=users.__getitem__)}"
    if waits["client"] >= 0.5:
        return "round trips (database mostly waits for its clients)"
    return "database CPU" if waits["running"] >= 0.5 else "not saturated"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, max(0, round(q * len(values)) - 1))], 2)


# --- the work each process loops -----------------------------------------------------------


def _synthetic_outcomes(batch, worker_id: str) -> list:
    """What the worker's handler stores for a batch, in shape and size: 18 probabilities,
    provenance and per-phase timings (worker/handler.py); the numbers are made up."""
    from backend.jobs.model_identity import LABELS, MODEL_NAME
    from backend.jobs.services.claims import InferenceOutcome

    provenance = {
        "model": MODEL_NAME,
        "model_version": batch.jobs[0].model_version,
        "labels": list(LABELS),
        "weights": "untrained",
        "weights_sha256": "untrained",
        "preprocessing": "capacity-bench",
        "backend": "capacity-bench",
        "precision": "fp32",
    }
    shared = {"inference_ms": 100.0, "postprocess_ms": 0.1, "batch_id": str(batch.batch_id)}
    return [
        InferenceOutcome(
            job_id=job.id,
            probabilities={label: round(random.random(), 6) for label in LABELS},
            provenance=provenance,
            timings={
                "preprocess_ms": 8.0,
                **shared,
                "batch_size": len(batch.jobs),
                "worker_id": worker_id,
            },
        )
        for job in batch.jobs
    ]


def _claim_loop(_index: int, duration: float, go, *, store: bool, batch_size: int) -> dict[str, Any]:
    from backend.jobs import selectors
    from backend.jobs.model_identity import current_model_version
    from backend.jobs.services import claims

    worker_id, version = f"capacity-{os.getpid()}", current_model_version()
    latencies, depth_ms, store_ms, ids, tokens = [], [], [], [], []
    stored = false_empty = short = 0
    drained = False
    go.wait()
    started = time.monotonic()
    deadline = started + duration
    while time.monotonic() < deadline:
        if store:
            # The worker looks at the queue's depth before each claim (worker/batch_loop.py,
            # _wait_for_batch, with the default batch wait): part of its database work. It asks
            # only "a batch's worth?", so it counts at most that far, as the worker does.
            t0 = time.perf_counter()
            selectors.queue_depth(model_version=version, at_most=batch_size)
            depth_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        batch = claims.job_claim_batch(worker_id=worker_id, model_version=version, max_size=batch_size)
        latencies.append((time.perf_counter() - t0) * 1000)
        if not batch.jobs:
            if selectors.queue_depth(model_version=version) == 0:
                drained = True
                break
            # Jobs are queued, yet the claim found none: the rows it picked were claimed and
            # committed by another claimer after its snapshot (counted: a worker would stop here).
            false_empty += 1
            continue
        if len(batch.jobs) > batch_size:
            raise RuntimeError(f"claimed {len(batch.jobs)} > {batch_size}")
        short += len(batch.jobs) < batch_size
        ids.extend(str(j) for j in batch.job_ids)
        tokens.append(str(batch.claim_token))
        if store:
            outcomes = _synthetic_outcomes(batch, worker_id)
            t0 = time.perf_counter()
            stored += len(claims.job_store_results(batch=batch, outcomes=outcomes))
            store_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "elapsed": time.monotonic() - started,
        "latencies": latencies,
        "depth_ms": depth_ms,
        "store_ms": store_ms,
        "ids": ids,
        "tokens": tokens,
        "stored": stored,
        "false_empty": false_empty,
        "short": short,
        "drained": drained,
    }


def _png_with_text(png: bytes, text: bytes) -> bytes:
    """The same image with a tEXt chunk after IHDR: other bytes (another sha256), same pixels.
    The intake strips the chunk again, so what is stored is the image."""
    chunk = b"tEXt" + b"Comment\x00" + text
    packed = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + packed + png[ihdr_end:]


def _upload_loop(index: int, duration: float, go) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.clients.models import Client
    from backend.jobs.services import intake

    clients = list(Client.objects.order_by("name"))
    base = SAMPLE_PNG.read_bytes()
    latencies, ids, dedup = [], [], 0
    go.wait()
    started = time.monotonic()
    deadline, n = started + duration, 0
    while time.monotonic() < deadline:
        data = _png_with_text(base, f"capacity {os.getpid()} {n}".encode())
        upload = SimpleUploadedFile(f"{n}.png", data, content_type="image/png")
        t0 = time.perf_counter()
        outcome = intake.job_create(client=clients[(index + n) % len(clients)], upload=upload)
        latencies.append((time.perf_counter() - t0) * 1000)
        dedup += outcome.deduplicated
        ids.append(str(outcome.job.id))
        n += 1
    return {"elapsed": time.monotonic() - started, "latencies": latencies, "ids": ids, "dedup": dedup}


def _child(
    target: Callable[..., dict], index: int, duration: float, ready, go, results, done, kwargs
) -> None:
    from django.db import connection

    announced = False
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend_pid = cur.fetchone()[0]
        ready.put((os.getpid(), backend_pid))
        announced = True
        results.put(target(index, duration, go, **kwargs))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
        if not announced:
            ready.put((os.getpid(), None))
        results.put({"error": f"{type(exc).__name__}: {exc}"})
    done.wait(60)  # alive until the parent has read this process's CPU time


def run_step(
    target: Callable[..., dict], *, procs: int, duration: float, server: str, database: str, **kwargs
) -> tuple[list[dict], dict[str, Any]]:
    """Run `target` in `procs` forked processes at once; their results and the probe's figures."""
    from django.db import connections

    connections.close_all()  # each child opens its own
    ctx = get_context("fork")
    ready, results, go, done = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    children = [
        ctx.Process(target=_child, args=(target, i, duration, ready, go, results, done, kwargs), daemon=True)
        for i in range(procs)
    ]
    for child in children:
        child.start()
    try:
        pids = [ready.get(timeout=120) for _ in children]
        probe = _Probe(
            server=server,
            database=database,
            bench_pids=[p for p, _ in pids],
            backend_pids=[b for _, b in pids if b is not None],
        )
        probe.start()
        go.set()
        out = [results.get(timeout=duration + 300) for _ in children]
        figures = probe.stop()
    finally:
        done.set()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} bench process(es) failed: {errors[0]}")
    return out, figures


# --- the steps -------------------------------------------------------------------------------


def reset_queue(*, server: str, database: str) -> int:
    """Every job back to QUEUED and unclaimed, results gone, statistics fresh; the queue's length."""
    conn = psycopg2.connect(f"{server}/{database}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DELETE FROM jobs_jobresult")
        cur.execute(
            "UPDATE jobs_job SET status = 'QUEUED', attempts = 0, started_at = NULL, finished_at = NULL,"
            " claimed_by = '', claim_token = NULL, lease_expires_at = NULL, batch_id = NULL"
            " WHERE status <> 'QUEUED'"
        )
        cur.execute("VACUUM ANALYZE jobs_job, jobs_jobresult")
        cur.execute("SELECT count(*) FROM jobs_job WHERE status = 'QUEUED'")
        queued = cur.fetchone()[0]
    conn.close()
    return queued


def _counts(*, server: str, database: str) -> dict[str, int]:
    conn = psycopg2.connect(f"{server}/{database}")
    with conn.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM jobs_job GROUP BY status")
        counts = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM jobs_jobresult")
        counts["results"] = cur.fetchone()[0]
    conn.close()
    return counts


def claim_step(
    *, mode: str, procs: int, batch_size: int, duration: float, server: str, database: str, cores: int
) -> dict[str, Any]:
    queued = reset_queue(server=server, database=database)
    out, probe = run_step(
        _claim_loop,
        procs=procs,
        duration=duration,
        server=server,
        database=database,
        store=mode == "cycle",
        batch_size=batch_size,
    )
    ids = [i for r in out for i in r["ids"]]
    tokens = [t for r in out for t in r["tokens"]]
    stored = sum(r["stored"] for r in out)
    latencies = [x for r in out for x in r["latencies"]]
    counts = _counts(server=server, database=database)
    moved = counts.get("IN_PROGRESS", 0) + counts.get("SUCCEEDED", 0)
    # A job claimed twice shows as a repeated id, or as fewer rows moved than jobs claimed.
    double = (len(ids) - len(set(ids))) + max(len(ids) - moved, 0)
    consistent = (
        moved == len(set(ids))
        and len(tokens) == len(set(tokens))
        and counts.get("SUCCEEDED", 0) == stored == counts["results"]
        and (mode == "cycle" or stored == 0)
    )
    window = max(r["elapsed"] for r in out)
    row = {
        "step": mode,
        "procs": procs,
        "batch": batch_size,
        "queued_at_start": queued,
        "seconds": round(window, 2),
        "jobs": len(ids),
        "jobs_s": round(len(ids) / window, 1),
        "claims": len(latencies),
        "claims_s": round(len(latencies) / window, 1),
        "stored_s": round(stored / window, 1),
        "claim_ms_p50": _percentile(latencies, 0.50),
        "claim_ms_p95": _percentile(latencies, 0.95),
        "depth_ms_p50": _percentile([x for r in out for x in r["depth_ms"]], 0.50),
        "store_ms_p50": _percentile([x for r in out for x in r["store_ms"]], 0.50),
        "empty_claims": sum(r["false_empty"] for r in out),
        "short_claims": sum(r["short"] for r in out),
        "drained": any(r["drained"] for r in out),
        "double_claims": double,
        "consistent": consistent,
        **probe,
    }
    row["db_ms_per_job"] = round(1000 * probe["cpu_seconds_db"] / len(ids), 3) if ids else None
    row["verdict"] = verdict(probe, cores=cores)
    return row


def upload_step(*, procs: int, duration: float, server: str, database: str, cores: int) -> dict[str, Any]:
    before = _counts(server=server, database=database)
    out, probe = run_step(_upload_loop, procs=procs, duration=duration, server=server, database=database)
    ids = [i for r in out for i in r["ids"]]
    latencies = [x for r in out for x in r["latencies"]]
    after = _counts(server=server, database=database)
    created = after.get("QUEUED", 0) - before.get("QUEUED", 0)
    window = max(r["elapsed"] for r in out)
    row = {
        "step": "upload",
        "procs": procs,
        "queued_at_start": before.get("QUEUED", 0),
        "seconds": round(window, 2),
        "jobs": len(ids),
        "inserts_s": round(created / window, 1),
        "upload_ms_p50": _percentile(latencies, 0.50),
        "upload_ms_p95": _percentile(latencies, 0.95),
        "deduplicated": sum(r["dedup"] for r in out),
        "consistent": created == len(set(ids)) == len(ids),
        **probe,
    }
    row["db_ms_per_job"] = round(1000 * probe["cpu_seconds_db"] / len(ids), 3) if ids else None
    row["bench_ms_per_upload"] = round(1000 * probe["bench_cores"] * window / len(ids), 2) if ids else None
    row["verdict"] = verdict(probe, cores=cores)
    return row


def model(
    rows: list[dict], *, queued: int, batch_size: int, engine_img_s: float, engine_cores: int
) -> dict[str, Any] | None:
    """Worker cores one PostgreSQL like this one feeds with `queued` jobs waiting: the claim->store
    ceiling over what one worker core turns out; and per database core, from the database CPU
    one job costs."""
    cycles = [
        r
        for r in rows
        if r["step"] == "cycle" and r["queued"] == queued and r["batch"] == batch_size and r["jobs"]
    ]
    if not cycles:
        return None
    best = max(cycles, key=lambda r: r["stored_s"])
    per_core = engine_img_s / engine_cores
    db_ms = statistics.median(r["db_ms_per_job"] for r in cycles if r["db_ms_per_job"])
    per_db_core = 1000 / db_ms if db_ms else None
    return {
        "queued": queued,
        "batch": batch_size,
        "ceiling_results_s": best["stored_s"],
        "ceiling_at_procs": best["procs"],
        "ceiling_db_cores": best["db_cores"],
        "db_ms_per_job_median": round(db_ms, 3),
        "results_s_per_db_core": round(per_db_core, 1) if per_db_core else None,
        "engine_img_s_per_worker_process": engine_img_s,
        "engine_img_s_per_core": round(per_core, 2),
        "worker_cores_fed_here": round(best["stored_s"] / per_core, 1),
        "worker_cores_fed_per_db_core": round(per_db_core / per_core, 1) if per_db_core else None,
    }


def _machine() -> dict[str, Any]:
    name = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {"cpu": name, "cores": psutil.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _print_header() -> None:
    print(
        f"{'step':<7}{'procs':>6}{'B':>4}{'jobs/s':>9}{'claims/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'db cores':>10}{'bench':>7}{'broker':>8}{'other':>7}{'lock':>6}{'wait cl':>8}"
        f"{'short':>6}{'db ms/job':>11}  verdict"
    )


def _print_row(r: dict) -> None:
    upload = r["step"] == "upload"
    waits = r["backend_waits"]
    short = 0 if upload else (r["short_claims"] + r["empty_claims"]) / max(r["claims"], 1)
    print(
        f"{r['step']:<7}{r['procs']:>6}{'-' if upload else r['batch']:>4}"
        f"{r['inserts_s'] if upload else r['jobs_s']:>9}{'-' if upload else r['claims_s']:>10}"
        f"{r['upload_ms_p50' if upload else 'claim_ms_p50']:>9}"
        f"{r['upload_ms_p95' if upload else 'claim_ms_p95']:>9}"
        f"{r['db_cores']:>10}{r['bench_cores']:>7}{r['broker_cores']:>8}"
        f"{r['other_load_cores'] + r['postgres_other_dbs_cores']:>7.2f}"
        f"{waits['lock'] + waits['lwlock']:>6.0%}{waits['client']:>8.0%}"
        f"{'-' if upload else f'{short:.0%}':>6}{r['db_ms_per_job'] or '-':>11}  {r['verdict']}"
    )


def _broker_reachable(url: str) -> bool:
    """A Redis broker answers on its port (else every store would wait out a connect timeout
    announcing ended jobs)."""
    if not url.startswith(("redis://", "rediss://")):
        return True
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def _drop_broker_queue(broker: str, queue: str) -> None:
    if broker.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker)
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        client.close()


def _bytes_per_row(table: str, *, server: str, database: str) -> float | None:
    """Table, indexes and TOAST over its rows: what one more row costs on disk."""
    conn = psycopg2.connect(f"{server}/{database}")
    with conn.cursor() as cur:
        cur.execute(f"SELECT pg_total_relation_size('{table}'), (SELECT count(*) FROM {table})")
        size, rows = cur.fetchone()
    conn.close()
    return round(size / rows) if rows else None


def _stored_image_bytes(media: Path) -> float | None:
    sizes = [f.stat().st_size for f in media.rglob("*") if f.is_file()]
    return round(statistics.mean(sizes)) if sizes else None


def warm_up(*, server: str, database: str) -> None:
    """One claim, store and upload here, before any process is forked, so that the measured
    processes inherit what those paths import on first use (redis, kombu's transport, Pillow's
    plugins: a second of CPU per process) instead of importing it inside the measured window.
    Undone afterwards. (Connections are not shared: Django's are closed before each fork,
    redis-py's pools and Celery's producer pool start afresh in a forked process.)"""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.clients.models import Client
    from backend.jobs.model_identity import current_model_version
    from backend.jobs.services import claims, intake

    batch = claims.job_claim_batch(
        worker_id="capacity-warm-up", model_version=current_model_version(), max_size=1
    )
    if batch.jobs:
        claims.job_store_results(batch=batch, outcomes=_synthetic_outcomes(batch, "capacity-warm-up"))
    data = _png_with_text(SAMPLE_PNG.read_bytes(), b"capacity warm-up")
    intake.job_create(client=Client.objects.first(), upload=SimpleUploadedFile("warm-up.png", data))
    _forget_uploads(server=server, database=database)
    reset_queue(server=server, database=database)


def _forget_uploads(*, server: str, database: str) -> None:
    """Remove the jobs the upload steps made (the seeded ones have no file), so the next queue
    size starts from seeded jobs only. Their files go with the media folder at the end."""
    conn = psycopg2.connect(f"{server}/{database}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DELETE FROM jobs_job WHERE upload NOT LIKE 'x/%%'")
    conn.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from worker.runtime.tuned import EngineConfig

    shipped_batch = EngineConfig().batch_max_size
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[2_000, 100_000],
        help="queue sizes, each measured in turn (2,000: the shipped CXRQ_MAX_QUEUE_DEPTH)",
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--stat-share", type=float, default=0.1)
    parser.add_argument("--spread", type=float, default=1800.0, help="created_at spread, seconds")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrent claimers")
    parser.add_argument("--batches", type=int, nargs="+", default=[shipped_batch, 1])
    parser.add_argument("--modes", nargs="+", choices=["claim", "cycle"], default=["claim", "cycle"])
    parser.add_argument("--upload-procs", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--engine-img-s", type=float, default=ENGINE_IMG_S)
    parser.add_argument("--engine-cores", type=int, default=ENGINE_CORES)
    parser.add_argument("--database", default=f"cxrq_capacity_bench_{uuid.uuid4().hex[:8]}")
    parser.add_argument("--broker", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="defaults for a test: 5,000 jobs, 1 and 4 claimers, batch B only, 1 and 2 uploaders, 3 s",
    )
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(
            jobs=[5_000], procs=[1, 4], batches=[shipped_batch], upload_procs=[1, 2], duration=3.0
        )
    args = parser.parse_args(argv)
    if not _broker_reachable(args.broker):
        print(
            f"broker {args.broker} not reachable: wake-ups go to a filesystem broker folder instead",
            flush=True,
        )
        args.broker = "filesystem://"

    server, cores, machine = server_url(), psutil.cpu_count(), _machine()
    scratch = Path(tempfile.mkdtemp(prefix="cxrq-capacity-"))  # media, and a filesystem broker's folder
    queue = f"cxrq-capacity-{uuid.uuid4().hex[:8]}"
    most = max(args.jobs)
    env = {
        "CXRQ_MEDIA_ROOT": str(scratch / "media"),
        "CXRQ_BROKER_DIR": str(scratch / "broker"),
        "CELERY_BROKER_URL": args.broker,
        "CXRQ_QUEUE": queue,
        "CXRQ_LOG_LEVEL": "WARNING",
        # Backpressure is checked on every upload (its queue counts are part of intake's cost), but
        # with the seeded backlog it must not refuse.
        "CXRQ_MAX_QUEUE_DEPTH": str(10 * most + 1_000_000),
        "CXRQ_CLIENT_MAX_QUEUED_JOBS": str(10 * most + 1_000_000),
    }
    print(
        f"capacity: {', '.join(f'{n:,}' for n in sorted(args.jobs))} queued over {args.clients} clients in "
        f"{args.database} on {server}; {machine['cpu']}, {cores} cores, load {machine['load_avg']}",
        flush=True,
    )
    rows: list[dict] = []
    seed_s: dict[int, float] = {}
    storage: dict[str, float | None] = {}
    try:
        with scratch_database(args.database, server=server, env=env):
            from backend.clients.models import Client

            clients = Client.objects.bulk_create(
                [Client(name=f"client-{i:03d}") for i in range(args.clients)]
            )
            seeded = 0
            for size in sorted(set(args.jobs)):
                t0 = time.perf_counter()
                queue_jobs(
                    clients,
                    size - seeded,
                    first=seeded,
                    weights=[1 / (k + 1) for k in range(len(clients))],
                    stat_share=args.stat_share,
                    spread_seconds=args.spread,
                )
                seeded = size
                seed_s[size] = round(time.perf_counter() - t0, 1)
                if "job_row_bytes" not in storage:  # freshly inserted rows: no dead versions yet
                    storage["job_row_bytes"] = _bytes_per_row(
                        "jobs_job", server=server, database=args.database
                    )
                if len(seed_s) == 1:
                    warm_up(server=server, database=args.database)
                print(f"\n{size:,} queued (seeded in {seed_s[size]} s)", flush=True)
                _print_header()
                for batch_size in args.batches:
                    for procs in args.procs:
                        for mode in args.modes:
                            row = claim_step(
                                mode=mode,
                                procs=procs,
                                batch_size=batch_size,
                                duration=args.duration,
                                server=server,
                                database=args.database,
                                cores=cores,
                            )
                            rows.append({"queued": size, **row})
                            if mode == "cycle" and "result_row_bytes" not in storage:  # the first results
                                storage["result_row_bytes"] = _bytes_per_row(
                                    "jobs_jobresult", server=server, database=args.database
                                )
                            _print_row(rows[-1])
                reset_queue(server=server, database=args.database)
                for procs in args.upload_procs:
                    row = upload_step(
                        procs=procs,
                        duration=args.duration,
                        server=server,
                        database=args.database,
                        cores=cores,
                    )
                    rows.append({"queued": size, **row})
                    _print_row(rows[-1])
                storage.setdefault("stored_image_bytes", _stored_image_bytes(scratch / "media"))
                _forget_uploads(server=server, database=args.database)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(Exception):
            _drop_broker_queue(args.broker, queue)

    models = [
        m
        for size in sorted(set(args.jobs))
        if (
            m := model(
                rows,
                queued=size,
                batch_size=args.batches[0],
                engine_img_s=args.engine_img_s,
                engine_cores=args.engine_cores,
            )
        )
    ]
    print()
    for m in models:
        print(
            f"model at {m['queued']:,} queued: claim->store ceiling {m['ceiling_results_s']} results/s here "
            f"({m['ceiling_at_procs']} processes, database on {m['ceiling_db_cores']} cores); "
            f"{m['db_ms_per_job_median']} ms of database CPU per job = {m['results_s_per_db_core']} results/s "
            f"per database core; at {m['engine_img_s_per_core']} images/s per worker core that feeds "
            f"{m['worker_cores_fed_here']} worker cores here, {m['worker_cores_fed_per_db_core']} per database core"
        )
    print(
        f"note: the bench processes and PostgreSQL share these {cores} cores "
        f"(load {machine['load_avg']} before the run): per database core is the figure to carry elsewhere"
    )
    result = {
        "command": "python -m tools.capacity " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "database": args.database,
        "database_dropped": not database_exists(args.database, server=server),
        "jobs": sorted(set(args.jobs)),
        "clients": args.clients,
        "stat_share": args.stat_share,
        "spread_s": args.spread,
        "shipped_batch": shipped_batch,
        "duration_s": args.duration,
        "seed_s": seed_s,
        "double_claims": sum(r.get("double_claims", 0) for r in rows),
        "consistent": all(r["consistent"] for r in rows),
        "steps": rows,
        "models": models,
        "storage": storage,
    }
    line = json.dumps(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return result


if __name__ == "__main__":
    main()

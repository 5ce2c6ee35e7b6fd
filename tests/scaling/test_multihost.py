"""Several hosts on one machine (network namespaces, tests/scaling/netns.py): PostgreSQL and Redis
on `db`, the web on `web`, a worker on each of `w1` and `w2`, this test's requests from `client`.

Jobs uploaded through the web are run by both worker hosts; then w1's cable is pulled at the
switch while it holds a batch. Its leases lapse, w2's reaper requeues its jobs and w2 runs them;
when w1's cable is back, its late results reach the database and are refused (its claim token is
stale). Every job ends SUCCEEDED with one result, stored by the host that held the live claim.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2
import pytest

from tests.factories import png_bytes
from tests.reliability.harness import STACK_CLIENT, PrivatePostgres, PrivateRedis
from tests.scaling.netns import HostStack, Network, postgres_bin_dir, sweep_leftovers, unavailable_reason

pytestmark = pytest.mark.slow

HOSTS = ("db", "web", "w1", "w2", "client")
JOBS = 40
LEASE_SECONDS = 5
# Every batch, of one job or four, runs 2.5 s: long enough to cut w1 off mid-batch, and to bring it
# back while the other host still runs the last of its jobs. No claim-ahead (preprocessing
# inline), so a host holds one batch at a time and what it held at the cut is one batch.
WORKER_ENV = {
    "CXRQ_LEASE_SECONDS": str(LEASE_SECONDS),
    "CXRQ_FAKE_BATCH_MS": "2500",
    "CXRQ_FAKE_IMAGE_MS": "0",
    "CXRQ_BATCH_MAX_SIZE": "4",
    "CXRQ_BATCH_MAX_WAIT_MS": "100",
    "CXRQ_PREPROCESS_WORKERS": "0",
    "CXRQ_WORKER_CONCURRENCY": "1",
}
# From the first upload to the last check; setup (initdb, migrations, start-up) comes before.
FLOW_SECONDS = 90


@pytest.fixture(scope="module", autouse=True)
def _hosts_possible() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"multi-host test: {reason}")
    sweep_leftovers()  # an earlier run that crashed before its finalizers


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(HOSTS)
    try:
        net.create()
        yield net
    finally:
        net.destroy()


@pytest.fixture
def db_host(network, tmp_path, monkeypatch) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    monkeypatch.setenv("PATH", f"{postgres_bin_dir()}:{os.environ['PATH']}")
    on_db = {"host": network.address("db"), "prefix": network.prefix_for("db")}
    pg = PrivatePostgres(tmp_path / "pg", port=5432, allow=network.cidr, **on_db)
    redis = PrivateRedis(tmp_path, port=6379, **on_db)
    try:
        pg.init()
        redis.start()
        yield pg, redis
    finally:
        redis.stop()
        pg.destroy()


@pytest.fixture
def stack(network, db_host, tmp_path) -> Iterator[HostStack]:
    pg, redis = db_host
    hosts = HostStack(tmp_path / "stack", pg.url, redis.url, network=network, **WORKER_ENV)
    try:
        hosts.migrate()
        hosts.create_client(STACK_CLIENT)
        yield hosts
    finally:
        hosts.stop_all()


class Database:
    """The test's own connection to the db host, from the client host."""

    def __init__(self, network: Network, url: str):
        with network.inside("client"):
            self.conn = psycopg2.connect(url, connect_timeout=5)
        self.conn.autocommit = True

    def rows(self, sql: str, *params) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def held_by(self, host: str) -> dict[str, list[str]]:
        """In-progress jobs a worker on `host` holds, by batch (worker ids start with the host)."""
        batches: dict[str, list[str]] = {}
        for batch_id, job_id in self.rows(
            "SELECT batch_id, id FROM jobs_job WHERE status = 'IN_PROGRESS' AND claimed_by LIKE %s",
            f"{host}:%",
        ):
            batches.setdefault(str(batch_id), []).append(str(job_id))
        return batches

    def stored_by(self, host: str) -> int:
        return self.rows(
            "SELECT count(*) FROM jobs_jobresult WHERE timings->>'worker_id' LIKE %s", f"{host}:%"
        )[0][0]


def wait_until(predicate, deadline: float, what: str):
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def test_host_cut_off_mid_batch_loses_nothing_and_cannot_store_late(network, db_host, stack):
    pg, _ = db_host
    stack.start_web()
    workers = stack.start_workers("w1", "w2")
    db = Database(network, pg.url)
    deadline = time.monotonic() + FLOW_SECONDS

    ids = []
    for i in range(JOBS):
        r = stack.upload(png_bytes(size=(128, 128), seed=i))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    wait_until(
        lambda: db.stored_by("w1") and db.stored_by("w2"), deadline, "both worker hosts to store results"
    )

    # A batch w1 has only just claimed: its cable goes before it can store it.
    seen = set(db.held_by("w1"))
    wait_until(lambda: set(db.held_by("w1")) - seen, deadline, "w1 to claim a fresh batch")
    network.cut("w1")
    t_cut = time.monotonic()
    cut_at = datetime.now(UTC)
    held = db.held_by("w1")
    assert len(held) == 1, f"w1 stored its batch before the cut took effect, or holds several: {held}"
    (cut_jobs,) = ({*batch} for batch in held.values())

    def states() -> dict[str, tuple[str, str]]:
        rows = db.rows(
            "SELECT id::text, status, claimed_by FROM jobs_job WHERE id = ANY(%s::uuid[])", sorted(cut_jobs)
        )
        return {job_id: (status, claimed_by.split(":")[0]) for job_id, status, claimed_by in rows}

    wait_until(
        lambda: all(holder != "w1" for _, holder in states().values()),
        deadline,
        f"the lease ({LEASE_SECONDS} s) of w1's jobs to lapse and another host to take them",
    )
    t_reclaimed = time.monotonic()
    assert t_reclaimed - t_cut >= LEASE_SECONDS - 1.5  # not before the lease (the heartbeat renews it)

    def last_one_running_on_w2() -> str | None:
        now = states()
        running = [i for i, (status, holder) in now.items() if (status, holder) == ("IN_PROGRESS", "w2")]
        succeeded = [i for i, (status, _) in now.items() if status == "SUCCEEDED"]
        return running[0] if len(running) == 1 and len(succeeded) == len(now) - 1 else None

    # Retried jobs are claimed one at a time: w2 runs them in turn. Bring w1 back while w2
    # runs the last: w1's late store then meets a job in progress under a newer claim.
    last = wait_until(last_one_running_on_w2, deadline, "w2 to run the last of w1's jobs")
    network.mend("w1")
    t_mended = time.monotonic()
    # w1's batch ended while its cable was out; its store leaves when TCP retransmits.
    wait_until(lambda: "event=results_dropped" in stack.log_of(workers["w1"]), deadline, "w1's late store")
    t_refused = time.monotonic()
    ((status, stored_by),) = db.rows(
        "SELECT j.status, r.timings->>'worker_id' FROM jobs_job j "
        "LEFT JOIN jobs_jobresult r ON r.job_id = j.id WHERE j.id = %s",
        last,
    )
    assert not (stored_by or "").startswith("w1:"), f"w1's stale result for {last} was stored"
    # Only the claim token told w1's store from w2's: the job was in progress under w2's claim.
    assert status == "IN_PROGRESS", f"w2 stored {last} before w1's late store came (timing): rerun"
    done = stack.wait_terminal(ids, max(1.0, deadline - time.monotonic()))
    t_all = time.monotonic()

    # Every job succeeded once, with one result.
    assert {body["status"] for body in done.values()} == {"succeeded"}
    (jobs, results, distinct) = db.rows(
        "SELECT (SELECT count(*) FROM jobs_job), count(*), count(DISTINCT job_id) FROM jobs_jobresult"
    )[0]
    assert jobs == results == distinct == JOBS
    report = stack.check_invariants()
    assert report["counts"]["results"] == report["counts"]["succeeded"] == JOBS

    # w1's jobs: requeued by the other host's reaper, run there on a second attempt, stored by it.
    w2_log = stack.log_of(workers["w2"]).splitlines()
    requeued = {
        i
        for line in w2_log
        if "event=leases_expired" in line
        for i in line.split("requeued=")[1].split()[0].split(",")
    }
    assert cut_jobs <= requeued
    cut_rows = db.rows(
        "SELECT j.id::text, j.attempts, j.claimed_by, r.timings->>'worker_id' "
        "FROM jobs_job j JOIN jobs_jobresult r ON r.job_id = j.id WHERE j.id = ANY(%s::uuid[])",
        sorted(cut_jobs),
    )
    assert len(cut_rows) == len(cut_jobs)
    for job_id, attempts, claimed_by, stored_by in cut_rows:
        assert attempts == 2, (job_id, attempts)
        assert claimed_by.startswith("w2:") and stored_by == claimed_by, (job_id, claimed_by, stored_by)

    # w1, back, tried to store its whole stale batch, and the claim-token guard refused it all.
    dropped = [
        {*line.split("job_ids=")[1].split()[0].split(",")}
        for line in stack.log_of(workers["w1"]).splitlines()
        if "event=results_dropped" in line and "reason=claim_lost" in line
    ]
    assert dropped == [cut_jobs], (dropped, cut_jobs)
    # Nothing w1 claimed before the cut was stored by it after the cut.
    (late,) = db.rows(
        "SELECT count(*) FROM jobs_jobresult r JOIN jobs_job j ON j.id = r.job_id "
        "WHERE r.timings->>'worker_id' LIKE 'w1:%%' AND r.created_at > %s AND j.started_at < %s",
        cut_at,
        cut_at,
    )[0]
    assert late == 0
    assert workers["w1"].poll() is None and workers["w2"].poll() is None  # both hosts still serve

    timings = {
        "cut_to_reclaimed_s": round(t_reclaimed - t_cut, 1),
        "cut_to_mended_s": round(t_mended - t_cut, 1),
        "mended_to_late_store_refused_s": round(t_refused - t_mended, 1),
        "cut_to_all_done_s": round(t_all - t_cut, 1),
        "jobs_cut_off": len(cut_jobs),
        "stored_by": {host: db.stored_by(host) for host in ("w1", "w2")},
    }
    print(f"multihost timings: {json.dumps(timings)}")

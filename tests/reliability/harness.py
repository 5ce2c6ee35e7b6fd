"""Real processes for fault tests: private Redis/PostgreSQL instances, a gunicorn web, Celery workers.

Tests that stop, restart or flush a service start their own instance on a
free port and never touch the shared ones. Tests on the shared PostgreSQL get
a database of their own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import requests

from loadtest.stack import ProcessStack, free_port, port_open, wait_for


class PrivateRedis:
    """redis-server on a free loopback port, or, given `host` and a command `prefix` (such as
    `ip netns exec NAME`), on that address wherever the prefix runs it."""

    def __init__(
        self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
    ):
        self.host, self.prefix = host, list(prefix)
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://{host}:{self.port}/0"

    def _reachable(self) -> bool:
        if not self.prefix:
            return port_open(self.port, self.host)
        ping = [*self.prefix, "redis-cli", "-h", self.host, "-p", str(self.port), "PING"]
        return subprocess.run(ping, capture_output=True, timeout=10).stdout.strip() == b"PONG"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._reachable, 10, what="redis")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def flushall(self) -> None:
        subprocess.run(
            [*self.prefix, "redis-cli", "-h", self.host, "-p", str(self.port), "FLUSHALL"],
            check=True,
            capture_output=True,
        )


class PrivatePostgres:
    """initdb + pg_ctl on a free port, run as the postgres user (initdb refuses root).

    Given `host`, a command `prefix` (such as `ip netns exec NAME`) and `allow` (a network in
    CIDR form), it listens on that address wherever the prefix runs it, trusting that network.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        allow: str = "",
    ):
        import tempfile

        # Its own directory outside pytest's (0700, root-only) tmp tree: the server runs as postgres.
        workdir = Path(tempfile.mkdtemp(prefix="cxrq-pg-"))
        workdir.chmod(0o755)
        self.workdir = workdir
        self.host, self.prefix, self.allow = host, list(prefix), allow
        self.port = port or free_port()
        self.datadir = workdir / "pgdata"
        self.sockdir = workdir / "pgsock"
        self.url = f"postgres://postgres@{host}:{self.port}/cxrq"

    def _as_postgres(self, *cmd: str) -> None:
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*self.prefix, *user, *cmd], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        for d in (self.datadir, self.sockdir):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        if os.geteuid() == 0:
            shutil.chown(self.datadir.parent, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        if self.allow:
            with open(self.datadir / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.allow} trust\n")
        self.start()
        self._as_postgres("createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", "cxrq")

    def start(self) -> None:
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-w",
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            f"-p {self.port} -k {self.sockdir} -c listen_addresses={self.host} -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


class SharedPostgresDatabase:
    """A database of this test's own on the shared server."""

    def __init__(self):
        self.name = f"cxrq_rel_{uuid.uuid4().hex[:10]}"
        self.url = f"postgres://postgres@127.0.0.1:5432/{self.name}"

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", sql],
            check=True,
            capture_output=True,
        )

    def create(self) -> None:
        self._psql(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class RabbitVhost:
    """A virtual host of this test's own on the shared RabbitMQ (127.0.0.1:5672, user guest),
    made and deleted with rabbitmqctl: the shared server itself is never stopped."""

    HOST, PORT = "127.0.0.1", 5672
    UNREACHABLE = "install rabbitmq-server (apt-get install rabbitmq-server) and start it"

    def __init__(self):
        self.name = f"cxrq-test-{uuid.uuid4().hex[:10]}"

    @classmethod
    def available(cls) -> bool:
        return shutil.which("rabbitmqctl") is not None and port_open(cls.PORT, cls.HOST)

    @staticmethod
    def ctl(*args: str) -> str:
        out = subprocess.run(
            ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
        )
        return out.stdout

    def create(self) -> None:
        self.ctl("add_vhost", self.name)
        self.ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        self.ctl("delete_vhost", self.name)

    def exists(self) -> bool:
        return self.name in self.ctl("list_vhosts", "name").split()

    def queue_types(self) -> dict[str, str]:
        """Every queue of the vhost and its type (classic, quorum, stream)."""
        listed = self.ctl("list_queues", "-p", self.name, "name", "type")
        rows = (line.split("\t") for line in listed.splitlines())
        return {row[0]: row[1] for row in rows if len(row) == 2 and row[0] != "name"}

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@{self.HOST}:{port or self.PORT}/{self.name}"


class TcpRelay:
    """A TCP relay in front of a server, to cut the stack off from it without touching the server
    (a shared one): `cut()` closes the port and every relayed connection (connection refused, as
    for a stopped broker); `blackhole()` accepts connections and relays nothing (a hung broker, a
    dropped link); `restore()` relays again (connections held in the black hole are closed)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set = set()
        self._listener = None
        self._relaying = threading.Event()

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._relaying.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            with self._lock:
                self._conns.add(client)
            if not self._relaying.is_set():
                continue  # black hole: held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self._lock:
                self._conns.add(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                if not self._relaying.is_set():
                    return  # black hole: what was sent is dropped, the peer hears nothing
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self._relaying.is_set():
                self._close(src)
                self._close(dst)

    def _close(self, sock) -> None:
        import socket

        with self._lock:
            self._conns.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _close_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            self._close(sock)

    def cut(self) -> None:
        self._relaying.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_all()

    def blackhole(self) -> None:
        self._relaying.clear()
        if self._listener is None:
            self.start()
            self._relaying.clear()

    def restore(self) -> None:
        self._close_all()
        if self._listener is None:
            self.start()
        self._relaying.set()

    def stop(self) -> None:
        self.cut()


def embedded_default(workdir: Path) -> dict[str, str]:
    """`make run`'s embedded default in `workdir`: SQLite and the filesystem broker, with its var/
    folder (broker, runstack's state file) there too. Pass as Stack(**embedded_default(dir))."""
    return {
        "database_url": f"sqlite:///{workdir / 'cxrq.sqlite3'}",
        "broker_url": "filesystem://",
        "CXRQ_VAR_DIR": str(workdir / "var"),
        "CXRQ_BROKER_DIR": str(workdir / "var" / "broker"),
    }


class MixedTraffic:
    """A few client threads looping over what a pilot's clients do, for `seconds`: uploads, long-polls
    (`?wait=`), SR and FHIR of finished jobs, lists, cancels. Every answer is counted by kind and
    status; a 5xx or a request that got no answer is kept as a problem."""

    # Relative weights. SR is built on the request thread and costs CPU: a modest share.
    MIX = {"upload": 30, "wait": 20, "list": 15, "get": 10, "fhir": 10, "cancel": 8, "sr": 7}

    def __init__(self, stack: Stack, *, threads: int = 4, seconds: float = 60.0):
        import threading

        self.stack, self.threads, self.seconds = stack, threads, seconds
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.counts: Counter = Counter()
        self.problems: list[str] = []
        self._seed = 0

    def _unique_png(self) -> bytes:
        from tests.factories import png_bytes

        with self.lock:
            self._seed += 1
            seed = self._seed
        return png_bytes(size=(128, 128), seed=seed)

    def _some_job(self, rng) -> str | None:
        with self.lock:
            return rng.choice(self.accepted[-50:]) if self.accepted else None

    def _one(self, kind: str, rng) -> None:
        url, headers = f"{self.stack.web_url}/api/v1/jobs", self.stack.headers()
        job = None if kind in ("upload", "list") else self._some_job(rng)
        if kind not in ("upload", "list") and job is None:
            kind = "upload"
        try:
            if kind == "upload":
                r = requests.post(
                    url, files={"image": ("x.png", self._unique_png())}, headers=headers, timeout=60
                )
                if r.status_code in (200, 201, 202):
                    with self.lock:
                        self.accepted.append(r.json()["id"])
            elif kind == "wait":
                r = requests.get(f"{url}/{job}", params={"wait": 5}, headers=headers, timeout=60)
            elif kind == "list":
                r = requests.get(url, params={"page_size": 20}, headers=headers, timeout=60)
            elif kind == "get":
                r = requests.get(f"{url}/{job}", headers=headers, timeout=60)
            elif kind == "fhir":
                r = requests.get(f"{url}/{job}/fhir", headers=headers, timeout=60)
            elif kind == "sr":
                r = requests.get(f"{url}/{job}/sr.dcm", headers=headers, timeout=60)
            else:
                r = requests.post(f"{url}/{job}/cancel", headers=headers, timeout=60)
        except requests.RequestException as exc:
            with self.lock:
                self.counts[(kind, "no answer")] += 1
                self.problems.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
            return
        with self.lock:
            self.counts[(kind, r.status_code)] += 1
            if r.status_code >= 500:
                self.problems.append(f"{kind}: {r.status_code} {r.text[:200]}")

    def _client(self, index: int) -> None:
        import random

        rng = random.Random(index)
        kinds, weights = list(self.MIX), list(self.MIX.values())
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            self._one(rng.choices(kinds, weights)[0], rng)

    def run(self) -> MixedTraffic:
        import threading

        clients = [threading.Thread(target=self._client, args=(i,)) for i in range(self.threads)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        return self

    def summary(self) -> dict[str, int]:
        return {f"{kind} {status}": n for (kind, status), n in sorted(self.counts.items(), key=str)}


# The client every stack's requests come from (a submit and an operator key).
STACK_CLIENT = "reliability"
# For tests of lease expiry: a lost worker's jobs come back after this.
LEASE_EXPIRY = {"CXRQ_LEASE_SECONDS": "3"}


class Stack(ProcessStack):
    """The stack on the given database and broker, with the fast fake model and short timers."""

    def __init__(self, workdir: Path, database_url: str, broker_url: str, **env: str):
        super().__init__(
            workdir,
            {
                "DJANGO_SETTINGS_MODULE": "backend.settings.test",
                "DATABASE_URL": database_url,
                "CELERY_BROKER_URL": broker_url,
                "CXRQ_QUEUE": f"cxrq-rel-{uuid.uuid4().hex[:8]}",
                "CXRQ_MEDIA_ROOT": str(workdir / "media"),
                "CXRQ_TEST_RUN_DIR": str(workdir / "run"),
                "CXRQ_MODEL_FAKE": "1",
                "CXRQ_WORKER_HEARTBEAT_SECONDS": "0.5",
                "CXRQ_WORKER_LIVE_SECONDS": "5",
                # Long enough to survive CPU starvation on two loaded cores: only the tests of
                # expiry (they say so with LEASE_EXPIRY) shorten it.
                "CXRQ_LEASE_SECONDS": "30",
                "CXRQ_SWEEP_AFTER_SECONDS": "2",
                "CXRQ_RETRY_BACKOFF_SECONDS": "0.2",
                "CXRQ_BATCH_MAX_WAIT_MS": "20",
                "DATABASE_CONN_MAX_AGE": "0",
            }
            | env,
        )
        (workdir / "run").mkdir(parents=True, exist_ok=True)

    def start_web(self, threads: int = 8, workers: int = 1) -> str:
        return super().start_web(workers=workers, threads=threads)

    def start_worker(self, name: str = "worker", **env: str) -> subprocess.Popen:
        return super().start_worker(name, ready_timeout=60, **env)

    def upload(self, data: bytes, name: str = "x.png", **headers: str) -> requests.Response:
        return requests.post(
            f"{self.web_url}/api/v1/jobs",
            files={"image": (name, data)},
            headers=self.headers() | headers,
            timeout=30,
        )

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.web_url}/api/v1/jobs/{job_id}", headers=self.headers(), timeout=10).json()

    def wait_terminal(self, job_ids: list[str], timeout: float) -> dict[str, dict]:
        pending = set(job_ids)
        done: dict[str, dict] = {}

        def check() -> bool:
            for job_id in list(pending):
                try:
                    body = self.job(job_id)
                except (requests.RequestException, ValueError):
                    return False
                if body.get("status") in ("succeeded", "failed", "cancelled"):
                    done[job_id] = body
                    pending.discard(job_id)
            return not pending

        try:
            wait_for(check, timeout, interval=0.3, what=f"{len(pending)} jobs to finish")
        except TimeoutError as exc:
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in self.logs)
            raise TimeoutError(
                f"{exc}; statuses={dict(Counter(self.job(i)['status'] for i in pending))}\n{tails}"
            ) from None
        return done

    def start_runstack(self, *, dicom_port: int = 0, ready_timeout: float = 120) -> subprocess.Popen:
        """`make run` (manage.py runstack) on this stack's database and broker, as the leader of
        its own process group, ready once its worker has started and its port answers."""
        import sys

        port = free_port()
        argv = [sys.executable, "manage.py", "runstack", "--port", str(port), "--dicom-port", str(dicom_port)]
        run = self.spawn("runstack", argv)
        self.web_url = f"http://127.0.0.1:{port}"
        log = Path(run.log_path)
        wait_for(
            lambda: (
                (b"event=worker_started" in log.read_bytes() and port_open(port)) or run.poll() is not None
            ),
            ready_timeout,
            what="runstack ready",
        )
        if run.poll() is not None:
            raise RuntimeError(f"runstack exited:\n{log.read_text(errors='replace')[-3000:]}")
        return run

    def health(self) -> dict:
        """/api/v1/health as an operator sees it (the figures, the stack's components)."""
        return requests.get(
            f"{self.web_url}/api/v1/health", headers=self.headers(operator=True), timeout=10
        ).json()

    def stored_by(self, job_ids: list[str]) -> dict[str, str]:
        """Which worker stored each job's result, from the database (the API does not say)."""
        code = (
            "import json; from backend.jobs.models import JobResult; "
            f"rows = JobResult.objects.filter(job_id__in={list(job_ids)!r}).values_list('job_id', 'timings'); "
            "print(json.dumps({str(i): t.get('worker_id', '') for i, t in rows}))"
        )
        return json.loads(self.manage("shell", "-c", code).stdout.strip().splitlines()[-1])

    def check_invariants(self) -> dict:
        out = self.manage("jobs_check", check=False)
        report = json.loads(out.stdout)
        assert out.returncode == 0, out.stdout + out.stderr
        return report

    def completions(self) -> list[str]:
        """Job ids whose inference completed and was stored, from every worker log."""
        ids = []
        for line in self.all_logs().splitlines():
            if "event=batch_done" in line and "stored=" in line:
                stored = int(line.split("stored=")[1].split()[0])
                batch = line.split("job_ids=")[1].split()[0].split(",")
                if stored == len(batch):
                    ids += batch
                else:  # some results were dropped: count the stored ones from the DB instead
                    ids += [f"partial:{i}" for i in batch]
        return ids

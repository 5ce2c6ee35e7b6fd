"""`make run` measured: the wake-up latency (upload -> a worker claims the job) and how long a stop
takes with long-polls in flight and a queue behind a busy worker.

    python -m tools.runstack_bench [--config embedded|services] [--uploads 30] [--fake-batch-ms 1500]

embedded: SQLite + the filesystem broker in a temporary var/ folder (what `make run` runs with no
services); services: PostgreSQL (a database of its own on 127.0.0.1:5432, dropped afterwards) + Redis
(CELERY_BROKER_URL, default redis://127.0.0.1:6379/9). The fake model (CXRQ_MODEL_FAKE) with a fixed
batch cost, so the figures are the stack's, not the model's. Latency: `started_at - created_at` of
jobs uploaded one at a time onto an idle worker (each waited for before the next). Stop: a queue is
built, clients long-poll (`?wait=30`) on queued jobs, then one SIGTERM to runstack's process group;
the time until no process of the group is left.

Prints the machine (cores, CPU, load average) with the figures: measure on a quiet machine, or say
that it was busy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import requests

from loadtest.stack import ProcessStack, free_port, port_open, wait_for


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    return f"nproc={os.cpu_count()} cpu={cpu!r} loadavg={Path('/proc/loadavg').read_text().split()[:3]}"


def png(seed: int) -> bytes:
    import io

    from PIL import Image

    img = Image.linear_gradient("L").resize((128, 128))
    img.putpixel((seed % 128, (seed // 128) % 128), 255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def start(
    config: str, workdir: Path, fake_batch_ms: float, broker_url: str
) -> tuple[ProcessStack, subprocess.Popen, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.settings.test",
        "CXRQ_VAR_DIR": str(workdir / "var"),
        "CXRQ_MEDIA_ROOT": str(workdir / "media"),
        "CXRQ_MODEL_FAKE": "1",
        "CXRQ_FAKE_BATCH_MS": str(fake_batch_ms),
        "CXRQ_BATCH_MAX_WAIT_MS": "0",
        "CXRQ_UPLOAD_RATE": "0",
        "CXRQ_READ_RATE": "0",
    }
    dbname = ""
    if config == "embedded":
        env |= {
            "DATABASE_URL": f"sqlite:///{workdir / 'cxrq.sqlite3'}",
            "CELERY_BROKER_URL": "filesystem://",
            "CXRQ_BROKER_DIR": str(workdir / "var" / "broker"),
        }
    else:
        dbname = f"cxrq_bench_{uuid.uuid4().hex[:8]}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", dbname], check=True)
        env |= {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{dbname}",
            "CELERY_BROKER_URL": broker_url,
        }
    stack = ProcessStack(workdir, env)
    stack.migrate()
    stack.create_client("bench")
    port = free_port()
    run = stack.spawn(
        "runstack", [sys.executable, "manage.py", "runstack", "--port", str(port), "--dicom-port", "0"]
    )
    stack.web_url = f"http://127.0.0.1:{port}"
    log = Path(run.log_path)  # type: ignore[attr-defined]
    wait_for(lambda: b"event=worker_started" in log.read_bytes() and port_open(port), 180, what="runstack")
    return stack, run, dbname


def upload(stack: ProcessStack, seed: int) -> str:
    r = requests.post(
        f"{stack.web_url}/api/v1/jobs",
        files={"image": ("x.png", png(seed))},
        headers=stack.headers(),
        timeout=60,
    )
    r.raise_for_status()
    return r.json()["id"]


def wake_up_latency(stack: ProcessStack, n: int) -> list[float]:
    seconds = []
    for i in range(n):
        job_id = upload(stack, 100_000 + i)
        while True:
            body = requests.get(
                f"{stack.web_url}/api/v1/jobs/{job_id}",
                params={"wait": 10},
                headers=stack.headers(),
                timeout=60,
            ).json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                break
        created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
        started = datetime.fromisoformat(body["started_at"].replace("Z", "+00:00"))
        seconds.append((started - created).total_seconds())
    return seconds


def loaded_stop(stack: ProcessStack, run: subprocess.Popen, queued: int, pollers: int) -> float:
    ids = [upload(stack, 200_000 + i) for i in range(queued)]

    def poll(job_id: str) -> None:
        # The server going away mid-poll is expected.
        with contextlib.suppress(requests.RequestException):
            requests.get(
                f"{stack.web_url}/api/v1/jobs/{job_id}",
                params={"wait": 30},
                headers=stack.headers(),
                timeout=60,
            )

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in ids[-pollers:]]
    for t in threads:
        t.start()
    time.sleep(2)  # the long-polls are in flight, the worker is in a batch
    os.killpg(run.pid, signal.SIGTERM)
    began = time.monotonic()
    while (
        run.poll() is None
        or subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True).stdout.strip()
    ):
        if time.monotonic() - began > 120:
            os.killpg(run.pid, signal.SIGKILL)
            return float("inf")
        time.sleep(0.1)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--fake-batch-ms", type=float, default=1500.0)
    parser.add_argument("--queued", type=int, default=40)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument(
        "--broker-url", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cxrq-runstack-bench-"))
    print(f"machine: {machine()} workdir={workdir}")
    stack, run, dbname = start(args.config, workdir, args.fake_batch_ms, args.broker_url)
    try:
        lat = sorted(wake_up_latency(stack, args.uploads))
        print(
            f"{args.config}: wake-up latency (upload -> claim) over {len(lat)} uploads: "
            f"median {statistics.median(lat) * 1000:.0f} ms, p90 {lat[int(len(lat) * 0.9) - 1] * 1000:.0f} ms, "
            f"max {lat[-1] * 1000:.0f} ms"
        )
        print(f"machine: {machine()}")
        stop = loaded_stop(stack, run, args.queued, args.pollers)
        print(
            f"{args.config}: SIGTERM to the group with {args.pollers} long-polls in flight and "
            f"{args.queued} jobs queued: group gone in {stop:.1f} s"
        )
        print(f"machine: {machine()}")
    finally:
        stack.stop_all()
        if dbname:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", dbname], check=False)


if __name__ == "__main__":
    main()

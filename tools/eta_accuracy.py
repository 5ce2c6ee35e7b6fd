"""How honest is a queued job's estimate? `make run` (runstack, embedded default: SQLite and the
filesystem broker in a temporary folder) with the fake model at a fixed cost per image; its worker
is paused (SIGSTOP) while N jobs arrive, each job's `queue.eta_seconds` is read, the worker resumes
(SIGCONT), and each job's actual wait from the resume to its end is set against its estimate.

    python -m tools.eta_accuracy [--jobs 1 8 32] [--image-ms 50] [--batch-ms 5]

Prints, per round, the estimate and the actual wait of the first, middle and last job and their
ratio (actual / estimate: 1 is exact, the issue asked for within a factor of two), the time from
`make run` to its `cxrq is ready` line, and the machine (cores, CPU, load average) with the
figures: measure on a quiet machine, or say that it was busy.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from loadtest.stack import ProcessStack, free_port, port_open, wait_for
from tools.runstack_bench import machine, png


def start(workdir: Path, image_ms: float, batch_ms: float) -> tuple[ProcessStack, object, float]:
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.settings.test",
        "CXRQ_VAR_DIR": str(workdir / "var"),
        "CXRQ_MEDIA_ROOT": str(workdir / "media"),
        "DATABASE_URL": f"sqlite:///{workdir / 'cxrq.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CXRQ_BROKER_DIR": str(workdir / "var" / "broker"),
        "CXRQ_MODEL_FAKE": "1",
        "CXRQ_FAKE_BATCH_MS": str(batch_ms),
        "CXRQ_FAKE_IMAGE_MS": str(image_ms),
        "CXRQ_UPLOAD_RATE": "0",
        "CXRQ_READ_RATE": "0",
        "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
    }
    stack = ProcessStack(workdir, env)
    stack.migrate()
    stack.create_client("bench")
    port = free_port()
    began = time.monotonic()
    run = stack.spawn(
        "runstack", [sys.executable, "manage.py", "runstack", "--port", str(port), "--dicom-port", "0"]
    )
    stack.web_url = f"http://127.0.0.1:{port}"
    log = Path(run.log_path)  # type: ignore[attr-defined]
    wait_for(lambda: b"cxrq is ready:" in log.read_bytes() and port_open(port), 180, what="the ready line")
    return stack, run, time.monotonic() - began


def the_worker(run) -> psutil.Process:
    """runstack's worker component: `python -m worker` became the Celery worker (exec)."""
    return next(p for p in psutil.Process(run.pid).children() if "worker.celery_app" in " ".join(p.cmdline()))


def pause(worker: psutil.Process, sig: int) -> None:
    for proc in [worker, *worker.children(recursive=True)]:
        proc.send_signal(sig)


def one_round(stack: ProcessStack, run, jobs: int, seed0: int) -> list[tuple[int, float, float]]:
    worker = the_worker(run)
    headers = stack.headers()
    pause(worker, signal.SIGSTOP)
    try:
        urls = []
        for i in range(jobs):
            r = requests.post(
                f"{stack.web_url}/api/v1/jobs",
                files={"image": ("x.png", png(seed0 + i))},
                headers=headers,
                timeout=60,
            )
            r.raise_for_status()
            urls.append(r.json()["url"])
        said = [requests.get(u, headers=headers, timeout=60).json()["queue"] for u in urls]
    finally:
        resumed = time.monotonic()
        pause(worker, signal.SIGCONT)
    ended: dict[int, float] = {}

    def wait(i: int, url: str) -> None:
        while True:
            body = requests.get(url, params={"wait": 30}, headers=headers, timeout=60).json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                ended[i] = time.monotonic() - resumed
                return

    threads = [threading.Thread(target=wait, args=(i, u)) for i, u in enumerate(urls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    picks = sorted({0, jobs // 2, jobs - 1})
    return [(said[i]["jobs_ahead"], said[i]["eta_seconds"], ended[i]) for i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--image-ms", type=float, default=50.0)
    parser.add_argument("--batch-ms", type=float, default=5.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cxrq-eta-accuracy-"))
    print(f"machine: {machine()} workdir={workdir}")
    stack, run, ready_s = start(workdir, args.image_ms, args.batch_ms)
    print(f"make run: 'cxrq is ready' after {ready_s:.1f} s (embedded default, fake model)")
    try:
        for n, jobs in enumerate(args.jobs):
            for ahead, eta, waited in one_round(stack, run, jobs, seed0=1000 * (n + 1)):
                ratio = f"{waited / eta:.2f}" if eta else "n/a"
                print(
                    f"jobs={jobs} image_ms={args.image_ms:g}: jobs_ahead={ahead} eta_seconds={eta} "
                    f"waited_s={waited:.2f} actual/estimate={ratio}"
                )
        print(f"machine: {machine()}")
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()

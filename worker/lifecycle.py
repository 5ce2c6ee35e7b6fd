"""One worker process's life: load the model, report in, run side duties, stop cleanly.

A Celery pool child builds one `WorkerProcess` (worker/tasks.py). Its start
loads and warms the model once, then starts three background loops, each on
its own thread and database connection, so that a slow one never delays
another (procrastinate's worker starts its side tasks the same way):

  heartbeat     report in (health reads it) and renew the leases of the batches
                this process holds; a frozen process stops renewing, so its jobs
                go to another worker
  lease-reaper  requeue (or fail after MAX_ATTEMPTS) jobs whose holder was lost
  queue-sweeper re-send wake-ups for queued jobs whose wake-up was lost

SIGTERM (systemd, `docker stop`, Ctrl-C of `make run`): the main Celery process
forwards it to its children (worker/tasks.py). The handler only sets a flag; it
never exits, because the parent may be handing this child a task at that moment
and would then wait for ever on a task nobody runs. A child that is draining
finishes the batch in hand, releases what it claimed ahead, and returns from its
task, so the parent's warm shutdown ends as soon as that batch is stored; the
parent then closes the pool and the children exit normally. A wake-up that
reaches a stopping child returns at once. (A child that exited here would make
the pool start a fresh one, which loads the model, and the parent would wait
for it.) A child signalled alone, whose parent never closes the pool, leaves by
itself after ORPHAN_STOP_SECONDS, and the pool starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from backend.jobs.services import leases, workers
from worker.batch_loop import BatchLoop
from worker.handler import InferenceHandler
from worker.runtime.prep_pool import PreprocessPool
from worker.runtime.protocol import Runtime
from worker.runtime.tuned import EngineConfig, engine_config

logger = logging.getLogger(__name__)

# After SIGTERM, a parent in warm shutdown closes the pool within moments of the batch in
# hand; a child still here this long after its signal was signalled alone.
ORPHAN_STOP_SECONDS = 30.0


class BackgroundLoop(threading.Thread):
    """Runs `step` every `interval` seconds until `stop` is set; a failing step is logged
    and retried on the next tick with a fresh database connection."""

    def __init__(self, name: str, interval: float, step: Callable[[], Any], stop: threading.Event):
        super().__init__(name=f"cxrq-{name}", daemon=True)
        self.duty, self.interval, self.step, self.stop = name, interval, step, stop

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                close_old_connections()
                self.step()
            except Exception:
                logger.warning("event=loop_step_failed loop=%s", self.duty, exc_info=True)
                connection.close()
        connection.close()


def load_runtime(config: EngineConfig) -> Runtime:
    if settings.MODEL_FAKE:
        from worker.runtime.fake import load_fake_runtime

        return load_fake_runtime()
    from worker.runtime.model import load_runtime as load_model

    return load_model(config)


class WorkerProcess:
    def __init__(self, runtime: Runtime | None = None, config: EngineConfig | None = None):
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.config = config  # read at start when not given, so tests may change settings first
        self.runtime = runtime
        self.stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._loops: list[BackgroundLoop] = []
        self._draining = threading.Event()
        self._orphan_timer: threading.Timer | None = None
        self.loop: BatchLoop | None = None

    # --- start ------------------------------------------------------------------------
    def start(self) -> BatchLoop:
        """Load and warm the model, report in, start the background loops. Idempotent."""
        with self._start_lock:
            if self.loop is not None:
                return self.loop
            if self.config is None:
                self.config = engine_config()
            if self.runtime is None:
                self.runtime = load_runtime(self.config)
            if self.runtime.engine is not None:
                # Fast mode that kept nothing faster runs the default configuration, batching too.
                self.config = self.runtime.engine
            handler = InferenceHandler(
                self.runtime, worker_id=self.worker_id, pool=PreprocessPool(self.config.preprocess_workers)
            )
            self.loop = BatchLoop(
                worker_id=self.worker_id,
                model_version=self.runtime.model_version,
                handler=handler,
                config=self.config,
                stopping=self.stopping,
            )
            self.loop.throughput.value = self._benchmark()
            self._heartbeat()
            beat = settings.WORKER_HEARTBEAT_SECONDS
            self._loops = [
                BackgroundLoop("heartbeat", beat, self._heartbeat, self.stopping),
                BackgroundLoop("lease-reaper", beat, leases.job_reap_expired, self.stopping),
                BackgroundLoop(
                    "queue-sweeper",
                    settings.SWEEP_AFTER_SECONDS / 2,
                    lambda: leases.job_sweep_queued(older_than_seconds=settings.SWEEP_AFTER_SECONDS),
                    self.stopping,
                ),
            ]
            for loop in self._loops:
                loop.start()
            logger.info("event=worker_started worker_id=%s info=%s", self.worker_id, self.info())
            return self.loop

    def info(self) -> dict[str, Any]:
        assert self.runtime is not None and self.config is not None
        rate = self.loop.throughput.value if self.loop is not None else None
        return self.runtime.describe() | {
            "batch_max_size": self.config.batch_max_size,
            "batch_max_wait_ms": self.config.batch_max_wait_ms,
            "preprocess_workers": self.config.preprocess_workers,
            # Measured throughput (worker/batch_loop.py Throughput): the waiting-time estimate's divisor.
            "images_per_second": None if rate is None else round(rate, 3),
        }

    def _benchmark(self) -> float | None:
        """The engine's figure before any batch (the model is warm: load_runtime ran its warm-up).
        None if it cannot run: no figure is better than no worker."""
        assert self.runtime is not None and self.config is not None
        try:
            return self.runtime.images_per_second(max(1, self.config.batch_max_size))
        except Exception:
            logger.warning("event=benchmark_failed worker_id=%s", self.worker_id, exc_info=True)
            return None

    def _heartbeat(self) -> None:
        """Renew the leases of what this process holds (first: it is what loses work when
        late), then report in."""
        assert self.runtime is not None and self.loop is not None
        for token in self.loop.held_claims():
            leases.job_renew_leases(claim_token=token)
        workers.worker_heartbeat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            model_version=self.runtime.model_version,
            info=self.info(),
        )

    # --- work -------------------------------------------------------------------------
    def drain(self, hint: list[str] | None = None) -> int:
        """A wake-up: run batches until the queue is empty (worker/batch_loop.py)."""
        loop = self.start()
        self._install_sigterm_handler()
        logger.debug("event=wakeup worker_id=%s job_ids=%s", self.worker_id, ",".join(hint or []))
        if self.stopping.is_set():
            return 0
        self._draining.set()
        try:
            return loop.drain()
        finally:
            self._draining.clear()

    # --- stop -------------------------------------------------------------------------
    def _install_sigterm_handler(self) -> None:
        # Installed at the first wake-up, not at process init: billiard sets the child's
        # signal handlers after Celery's initializer has run. Until then billiard's own
        # handler applies, which is right for a process that holds nothing.
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGTERM) != self.on_sigterm:
            signal.signal(signal.SIGTERM, self.on_sigterm)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        """Stop after the batch in hand: the batch loop checks between steps, so a batch claimed
        and not started yet is released, never stranded. Nothing here blocks or exits."""
        self.stopping.set()
        if self._orphan_timer is None:
            self._orphan_timer = threading.Timer(ORPHAN_STOP_SECONDS, self._leave_if_orphaned)
            self._orphan_timer.daemon = True
            self._orphan_timer.start()

    def _leave_if_orphaned(self) -> None:
        """Still alive long after SIGTERM: nobody is closing the pool. Finish, then go."""
        while self._draining.is_set():
            time.sleep(0.1)
        self.stop()
        logger.info("event=worker_exit worker_id=%s reason=sigterm_alone", self.worker_id)
        os._exit(0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background loops and sign off (health stops counting this process)."""
        self.stopping.set()
        if self._orphan_timer is not None and self._orphan_timer is not threading.current_thread():
            self._orphan_timer.cancel()
        deadline = time.monotonic() + timeout
        for loop in self._loops:
            loop.join(max(0.0, deadline - time.monotonic()))
        if self.loop is not None:
            self.loop.handler.pool.shutdown()
        try:
            workers.worker_signoff(worker_id=self.worker_id)
        except Exception:
            logger.warning("event=signoff_failed worker_id=%s", self.worker_id, exc_info=True)


_process: WorkerProcess | None = None


def current_process() -> WorkerProcess:
    """This process's worker (one per Celery pool child), created on first use."""
    global _process
    if _process is None:
        _process = WorkerProcess()
    return _process


def stop_current_process() -> None:
    if _process is not None:
        _process.stop()

"""The worker command line: the tuned concurrency applies unless a caller fixes one."""

from worker.celery_app import app
from worker.command import celery_worker_argv
from worker.runtime.tuned import engine_config


def test_worker_argv_leaves_concurrency_to_the_tuned_setting():
    argv = celery_worker_argv()
    assert not any(a.startswith("--concurrency") for a in argv)
    assert app.conf.worker_concurrency == engine_config().worker_concurrency >= 1
    assert "--concurrency=2" in celery_worker_argv(concurrency=2)
    assert celery_worker_argv(name="w1")[-2:] == ["-n", "w1@%h"]

"""`make run`'s console: one line says when the stack can score (a worker it started has reported
in), with the address and the weights; Celery's banner and gunicorn's startup lines stay out."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.harness import embedded_default, wait_for


def test_make_run_says_once_when_it_is_ready_to_score_and_keeps_the_banners_quiet(make_stack, tmp_path):
    embedded = embedded_default(tmp_path)
    stack = make_stack(embedded.pop("database_url"), embedded.pop("broker_url"), **embedded)
    run = stack.start_runstack()
    log = Path(run.log_path)
    wait_for(lambda: b"cxrq is ready:" in log.read_bytes(), 90, what="the ready line")
    text = log.read_text(errors="replace")
    assert text.count("cxrq is ready") == 1
    ready = next(line for line in text.splitlines() if line.startswith("cxrq is ready"))
    assert ready == f"cxrq is ready: {stack.web_url}/ (worker up, weights: untrained)"
    assert text.index("cxrq is starting") < text.index("cxrq is ready")
    # Celery's banner (its [config] and [queues] blocks) and gunicorn's INFO startup lines are gone.
    for noise in ("[config]", "[queues]", "-------------- celery@", "Booting worker", "Listening at"):
        assert noise not in text, noise
    assert "event=worker_started" in text  # the log lines themselves stay

"""cxrq worker: the Celery task, the process lifecycle, the batch loop, the inference handler
and the model runtime. It uses backend.jobs services and selectors; the backend never imports it.

  celery_app.py   entry point for `celery -A worker.celery_app` (the app is backend/celery_app.py)
  tasks.py        the wake-up task and the Celery signal hooks
  lifecycle.py    one worker process: model load, heartbeat / lease-reaper / queue-sweeper loops, SIGTERM
  batch_loop.py   drain, claim, claim-ahead, store / fail / retry (no torch)
  handler.py      preprocess -> infer -> postprocess for one batch (labels, provenance, timings)
  runtime/        model runtimes (real and fake), preprocessing, backends, tuned engine config
  command.py      the one worker command line; `python -m worker` runs it
"""

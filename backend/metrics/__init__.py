"""Prometheus metrics for the web and the worker (docs/observability.md).

  multiprocess.py  one folder of metric files per server (gunicorn's workers, Celery's pool)
  access.py        who may read metrics: the bearer token, or loopback where allowed
  collectors.py    series read from the database at scrape time (jobs, queue, workers, webhooks)
  uploads.py       the web's upload counter (new vs answered by dedup)
  middleware.py    django-prometheus's request middleware, safe with a client's odd headers
  views.py         GET /metrics on the web
  exporter.py      the HTTP endpoint the worker's main process serves on its own port

Nothing here imports prometheus_client when the app loads: gunicorn's master sets Django up
before it forks, and prometheus_client must first be imported after the folder is chosen.
"""

"""cxrq worker: Celery app, batch claimer and model runtime.

Importing this package (or worker.celery_app / worker.model_identity) must
never import torch: the web process imports them to dispatch wake-ups.
"""

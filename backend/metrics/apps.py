from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "backend.metrics"
    label = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from backend.metrics import multiprocess

        multiprocess.prepare_web_server()

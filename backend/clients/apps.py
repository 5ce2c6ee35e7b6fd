from django.apps import AppConfig
from django.core import checks


class ClientsConfig(AppConfig):
    name = "backend.clients"
    label = "clients"
    verbose_name = "clients and API keys"

    def ready(self) -> None:
        checks.register(check_rates)


def check_rates(app_configs=None, **kwargs) -> list[checks.CheckMessage]:  # noqa: ARG001 - Django's check signature
    """A mistyped CXRQ_UPLOAD_RATE / CXRQ_READ_RATE stops the process at start, not at the first request."""
    from django.conf import settings

    from backend.clients.ratelimit import Rate

    errors = []
    for name in ("UPLOAD_RATE", "READ_RATE"):
        try:
            Rate.parse(getattr(settings, name))
        except ValueError as exc:
            errors.append(checks.Error(f"CXRQ_{name}: {exc}", id="cxrq.E001"))
    return errors

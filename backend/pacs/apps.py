from django.apps import AppConfig


class PacsConfig(AppConfig):
    name = "backend.pacs"
    label = "pacs"
    verbose_name = "Results to PACS: DICOM destinations and deliveries"

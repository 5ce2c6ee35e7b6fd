from django.apps import AppConfig


class InteropConfig(AppConfig):
    name = "backend.interop"
    label = "interop"
    verbose_name = "Reports: DICOM SR and FHIR, built once and kept sealed"

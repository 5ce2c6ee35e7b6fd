from django.apps import AppConfig


class DicomnetConfig(AppConfig):
    name = "backend.dicomnet"
    label = "dicomnet"
    verbose_name = "DICOM network: senders and return paths"

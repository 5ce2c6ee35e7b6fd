from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "backend.core"
    label = "core"

    def ready(self) -> None:
        # The embedded default keeps its SQLite file and its broker's folders on disk:
        # make their directories at start (settings never touch the filesystem).
        db = settings.DATABASES["default"]
        if db["ENGINE"] == "django.db.backends.sqlite3" and str(db.get("NAME", "")) not in ("", ":memory:"):
            Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        for key in ("data_folder_in", "processed_folder", "control_folder"):
            folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
        # WhiteNoise serves static files from the apps' folders (WHITENOISE_USE_FINDERS) and
        # also looks in STATIC_ROOT, which collectstatic fills for an image that wants it.
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)

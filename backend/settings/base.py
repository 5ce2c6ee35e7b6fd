"""Settings shared by every environment, read from the environment (django-environ).

Every variable is listed with its default in docs/operations.md. With no
DATABASE_URL / CELERY_BROKER_URL set, the project runs on an embedded default
(SQLite + kombu's filesystem transport) so `make run` needs no services.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("CXRQ_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite file, media and broker folders of the embedded default

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "backend.core",
    "backend.jobs",
]

MIDDLEWARE = [
    "backend.core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'cxrq.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves a web process and a worker on one file:
    # wait for the writer lock instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_ROOT = Path(env.str("CXRQ_MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served by Django: uploads are not public.

# Uploads stream to a temporary file above 2.5 MB instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "backend.core.exception_handler.handle_exception",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.JSONParser",
    ],
    "UNAUTHENTICATED_USER": None,
}

# Shared counters for rate limits: Redis when configured, else per-process memory.
_CACHE_URL = env.str("CXRQ_CACHE_URL", default="")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _CACHE_URL,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    if _CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cxrq"}
}

# --- Celery (the broker only carries wake-up calls; PostgreSQL holds job state) ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_QUEUE = env.str("CXRQ_QUEUE", default="cxrq")
CELERY_BROKER_FS_DIR = Path(env.str("CXRQ_BROKER_DIR", default=str(VAR_DIR / "broker")))

# --- Upload limits ---
UPLOAD_MAX_BYTES = env.int("CXRQ_UPLOAD_MAX_BYTES", default=32 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("CXRQ_IMAGE_MAX_PIXELS", default=50_000_000)
IMAGE_MIN_SIDE = env.int("CXRQ_IMAGE_MIN_SIDE", default=64)

# --- Batching ---
BATCH_MAX_SIZE = env.int("CXRQ_BATCH_MAX_SIZE", default=8)
BATCH_MAX_WAIT_MS = env.int("CXRQ_BATCH_MAX_WAIT_MS", default=20)
LEASE_SECONDS = env.float("CXRQ_LEASE_SECONDS", default=60.0)
# --- Reliability (docs/reliability.md) ---
MAX_ATTEMPTS = env.int("CXRQ_MAX_ATTEMPTS", default=3)
RETRY_BACKOFF_SECONDS = env.float("CXRQ_RETRY_BACKOFF_SECONDS", default=2.0)
SWEEP_AFTER_SECONDS = env.float("CXRQ_SWEEP_AFTER_SECONDS", default=10.0)
DRAIN_MAX_SECONDS = env.float("CXRQ_DRAIN_MAX_SECONDS", default=10.0)
BATCH_TIME_LIMIT_SECONDS = env.int("CXRQ_BATCH_TIME_LIMIT_SECONDS", default=120)
MAX_QUEUE_DEPTH = env.int("CXRQ_MAX_QUEUE_DEPTH", default=2000)
QUEUE_FULL_RETRY_AFTER_SECONDS = env.int("CXRQ_QUEUE_FULL_RETRY_AFTER_SECONDS", default=5)
UPLOAD_RATE = env.str("CXRQ_UPLOAD_RATE", default="6000/min")
# Test-only stand-in for the model (worker/runtime/fake.py); production refuses it.
MODEL_FAKE = env.bool("CXRQ_MODEL_FAKE", default=False)
FAKE_BATCH_MS = env.float("CXRQ_FAKE_BATCH_MS", default=5.0)
FAKE_IMAGE_MS = env.float("CXRQ_FAKE_IMAGE_MS", default=1.0)
FAKE_POISON = env.str("CXRQ_FAKE_POISON", default="")
WORKER_HEARTBEAT_SECONDS = env.float("CXRQ_WORKER_HEARTBEAT_SECONDS", default=5.0)
WORKER_LIVE_SECONDS = env.float("CXRQ_WORKER_LIVE_SECONDS", default=30.0)

# --- Model ---
# Path to the official densenet121-res224-all weights. Empty: look in
# torchxrayvision's cache (~/.torchxrayvision/models_data/).
MODEL_WEIGHTS_PATH = env.str("CXRQ_MODEL_WEIGHTS_PATH", default="")
MODEL_WEIGHTS_SHA256 = env.str("CXRQ_MODEL_WEIGHTS_SHA256", default="")
# dev/test: run the deterministic fallback model when no weights are present.
MODEL_ALLOW_FALLBACK = env.bool("CXRQ_MODEL_ALLOW_FALLBACK", default=True)
MODEL_CACHE_DIR = Path(env.str("CXRQ_MODEL_CACHE_DIR", default=str(VAR_DIR / "models")))
MODEL_CALIBRATION_DIR = Path(
    env.str("CXRQ_MODEL_CALIBRATION_DIR", default=str(BASE_DIR / "tests" / "data" / "cxr"))
)
TORCH_THREADS = env.int("CXRQ_TORCH_THREADS", default=0)  # 0: one per core

LOG_LEVEL = env.str("CXRQ_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "backend.core.logging.RequestIdFilter"}},
    "formatters": {
        "kv": {
            "format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "celery": {"level": "INFO"},
    },
}

# --- Clinical image intake (issue 4; docs/intake.md) ---
# Everything before a DICOM file's pixel data is parsed from at most this many bytes.
DICOM_MAX_HEADER_BYTES = env.int("CXRQ_DICOM_MAX_HEADER_BYTES", default=4 * 1024 * 1024)
# Apply the VOI LUT (window / LUT sequence) like xrv.utils.read_xray_dcm(voi_lut=True).
# Off by default, as in torchxrayvision; turning it on changes the model version.
DICOM_APPLY_VOI_LUT = env.bool("CXRQ_DICOM_APPLY_VOI_LUT", default=False)
# Burned In Annotation = YES means identifying text in the pixels: refused unless this is on.
DICOM_ACCEPT_BURNED_IN_ANNOTATION = env.bool("CXRQ_DICOM_ACCEPT_BURNED_IN_ANNOTATION", default=False)
# Upload file names often carry a patient's name or ID: stored only when this is on.
STORE_ORIGINAL_FILENAME = env.bool("CXRQ_STORE_ORIGINAL_FILENAME", default=False)

# --- Inference engine (issue 5; docs/performance.md) -------------------------------
# The tuner (`make tune`) writes the measured best BATCH_MAX_SIZE, BATCH_MAX_WAIT_MS,
# threads, preprocessing workers, worker concurrency and backend for this machine to
# CXRQ_TUNED_CONFIG, one configuration for fp32 and one for fast mode; those become the
# defaults here. An environment variable still wins.
import json as _json  # noqa: E402

# fp32, or fast: bf16 (CPU) / fp16 (CUDA) and reduced-scale JPEG decoding, kept only when the
# guard measures max |dprob| <= CXRQ_FAST_MAX_ABS_DIFF on the calibration images at start.
INFERENCE_PRECISION = env.str("CXRQ_PRECISION", default="fp32")
FAST_MAX_ABS_DIFF = env.float("CXRQ_FAST_MAX_ABS_DIFF", default=0.02)
FAST_PREPROCESS = env.bool("CXRQ_FAST_PREPROCESS", default=True)
TUNED_CONFIG_PATH = Path(
    env.str("CXRQ_TUNED_CONFIG", default=str(BASE_DIR / "worker" / "runtime" / "tuned.json"))
)
try:
    _TUNED_FILE = _json.loads(TUNED_CONFIG_PATH.read_text()) if TUNED_CONFIG_PATH.is_file() else {}
    _TUNED = dict(_TUNED_FILE.get("config_fast" if INFERENCE_PRECISION == "fast" else "config") or {})
    _TUNED = _TUNED or dict(_TUNED_FILE.get("config") or {})
except (ValueError, OSError, AttributeError, TypeError):
    _TUNED = {}
BATCH_MAX_SIZE = env.int("CXRQ_BATCH_MAX_SIZE", default=_TUNED.get("batch_max_size", BATCH_MAX_SIZE))
BATCH_MAX_WAIT_MS = env.int(
    "CXRQ_BATCH_MAX_WAIT_MS", default=_TUNED.get("batch_max_wait_ms", BATCH_MAX_WAIT_MS)
)
TORCH_THREADS = env.int("CXRQ_TORCH_THREADS", default=_TUNED.get("threads", TORCH_THREADS))  # every backend's
PREPROCESS_WORKERS = env.int("CXRQ_PREPROCESS_WORKERS", default=_TUNED.get("preprocess_workers", 1))
WORKER_CONCURRENCY = env.int("CXRQ_WORKER_CONCURRENCY", default=_TUNED.get("worker_concurrency", 1))
INFERENCE_BACKEND = env.str("CXRQ_BACKEND", default=_TUNED.get("backend", "onnxruntime"))
INFERENCE_DEVICE = env.str("CXRQ_DEVICE", default="auto")  # auto: CUDA when torch sees a GPU

# "exact" (default: the fast exact path) or "reference" (torchxrayvision's scikit-image
# pipeline; the load test's seed-004 configuration).
PREPROCESS_PIPELINE = env.str("CXRQ_PREPROCESS", default="exact")

"""Settings shared by every environment, read from the environment (django-environ).

Every variable is listed with its default in docs/operations.md. With no
DATABASE_URL / CELERY_BROKER_URL set, the project runs on an embedded default
(SQLite + kombu's filesystem transport) so `make run` needs no services.

Settings are named like the variable they read, less its CXRQ_ prefix
(CXRQ_LEASE_SECONDS -> LEASE_SECONDS). Django's and Celery's own names are kept
where a library reads them (MEDIA_ROOT, CELERY_*). Nothing here touches a file
or a socket: reading the environment is all an import does.
"""

import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# SQLite file, media, model cache and broker folders of the embedded default (created at start).
VAR_DIR = Path(env.str("CXRQ_VAR_DIR", default=str(BASE_DIR / "var")))

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
    # The OpenAPI schema (/api/schema/) and its docs pages, with their assets served from here.
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The key model is ours (backend/clients/models.py, a subclass of its abstract model); the
    # library's own concrete APIKey table is created with the app and stays empty.
    "rest_framework_api_key",
    # Admin sign-in: failed attempts counted per user name and address, locked out past a limit.
    "axes",
    "backend.core",
    "backend.clients",
    "backend.jobs",
    "backend.audit",
    "backend.webhooks",
    "backend.dashboard",  # the operator dashboard in the admin (docs/operations.md#operator-dashboard)
    "backend.web",  # the web client for people at / (docs/web.md)
    # Prometheus metrics (docs/observability.md). django_prometheus is used for its middleware only:
    # as an app it would import prometheus_client in gunicorn's master, before backend.metrics
    # has chosen the folder its workers count in.
    "backend.metrics",
    # The DICOM receiver (C-STORE SCP, `manage.py run_dicom`) and the return path's sealed PHI.
    "backend.dicomnet",
    # Results sent back to the PACS (DICOM destinations, C-STORE deliveries by the dispatcher).
    "backend.pacs",
    # A job's SR and FHIR report, built once and kept sealed (backend/interop/models.py).
    "backend.interop",
]

MIDDLEWARE = [
    # Requests counted and timed by view and method (django-prometheus's, backend/metrics/middleware.py):
    # first and last.
    "backend.metrics.middleware.PrometheusBeforeMiddleware",
    "backend.core.middleware.RequestIdMiddleware",
    "backend.core.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, the API docs') from the process itself, in every mode: no
    # separate file server to configure, and make run's pages look as production's do.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "backend.metrics.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before checking it
    "django.contrib.auth.backends.ModelBackend",
]
# After this many failed admin sign-ins for one user name from one address, that pair is locked
# out (HTTP 429) for the cool-off time; an admin can lift it (manage.py axes_reset).
AXES_FAILURE_LIMIT = env.int("CXRQ_ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("CXRQ_ADMIN_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "backend.urls"
# A request refused by CSRF protection: 403 in the error shape, the web client's own page for a
# person's form (Django's stock page is a developer's).
CSRF_FAILURE_VIEW = "backend.core.views.csrf_failure"
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
    # Every transaction takes the write lock when it begins (BEGIN IMMEDIATE), so it waits its turn
    # under the busy timeout below. A deferred transaction that read first and writes later cannot
    # wait: when another writer committed in between, SQLite answers "database is locked" at once.
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # Seconds a connection waits for the writer lock before "database is locked": longer than any
    # write the stack holds it for, short enough that a stuck writer shows up as an error.
    DATABASES["default"]["OPTIONS"].setdefault("timeout", env.float("CXRQ_SQLITE_BUSY_TIMEOUT", default=20.0))
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
# Served from the apps' folders directly (no collectstatic step to forget); cached by hash.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_ROOT = Path(env.str("CXRQ_MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served by Django: uploads are not public.

# Uploads stream to a temporary file above 2.5 MB instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Django's handlers, but a large upload's temporary file is never named after the client's
# file name (a 240-character extension made "File name too long", a 500, before validation).
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "backend.core.uploads.SafeTemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# An upload is one image: a few file parts are already an error (400 multiple_images or
# too_many_files), and a thousand form fields or query parameters are 400 too_many_fields.
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("CXRQ_BATCH_MAX_IMAGES", default=64) + 4
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "backend.core.exception_handler.handle_exception",
    "DEFAULT_AUTHENTICATION_CLASSES": ["backend.clients.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["backend.clients.permissions.HasJobScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.JSONParser",
    ],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The published contract: OpenAPI 3.1 from the code (backend/jobs/schema.py annotates it).
SPECTACULAR_SETTINGS = {
    "TITLE": "cxrq API",
    "DESCRIPTION": "Asynchronous chest X-ray inference: upload, wait or poll, read the 18 pathology "
    "probabilities with their provenance. Every endpoint but health, the schema and the docs needs "
    "an API key: `Authorization: Api-Key <key>` (or `Bearer <key>`). Errors share one shape: "
    '`{"error": {"code", "message", "details"}}`.',
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": ["ok", "degraded"],
        "JobStatusEnum": "backend.jobs.schema.JOB_STATUSES",
    },
}

# Django's cache (Redis when configured, else per-process memory).
CACHE_URL = env.str("CXRQ_CACHE_URL", default="")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cxrq"}
}

# --- Celery: read by backend/celery_app.py (namespace CELERY). The broker carries wake-up
# calls only; job state is in the database, so these aim at "never lose a wake-up silently,
# never run one twice at once" rather than exactly-once delivery, which the claim gives.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
# kombu's transport for the URL's scheme, replaced where kombu's own is unsafe for our use
# (backend/broker_transports.py; docs/operations.md#the-embedded-default-make-run): the filesystem one
# writes in place and corrupts reads by another process; the virtual ones (filesystem, Redis)
# stop the worker on a message they cannot decode.
CELERY_BROKER_TRANSPORT = {
    "filesystem": "backend.broker_transports:AtomicFilesystemTransport",
    "redis": "backend.broker_transports:TolerantRedisTransport",
    "rediss": "backend.broker_transports:TolerantRedisTransport",
}.get(CELERY_BROKER_URL.split("://", 1)[0])
# Workers drop a message whose body they cannot decode with a WARNING (backend/celery_consumer.py).
CELERY_WORKER_CONSUMER = "backend.celery_consumer:TolerantConsumer"
CELERY_TASK_DEFAULT_QUEUE = env.str("CXRQ_QUEUE", default="cxrq")

# Rate-limit counters (backend/clients/ratelimit.py): a Redis URL, by default the cache's or
# else the broker's when that is Redis; empty: the database (the embedded default).
_REDIS_BROKER = CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
RATE_LIMIT_URL = env.str("CXRQ_RATE_LIMIT_URL", default=CACHE_URL or _REDIS_BROKER)
# Job-ended announcements for long-poll waiters (backend/jobs/events.py): a Redis URL, by default
# the broker's; empty (the embedded default): waiters look again every second instead.
JOB_EVENTS_URL = env.str("CXRQ_JOB_EVENTS_URL", default=_REDIS_BROKER)
# The longest `?wait=` a client may ask for, in seconds.
LONG_POLL_MAX_SECONDS = env.int("CXRQ_LONG_POLL_MAX_SECONDS", default=30)
BROKER_DIR = Path(env.str("CXRQ_BROKER_DIR", default=str(VAR_DIR / "broker")))
# `make run` (manage.py runstack): seconds its processes get to stop after Ctrl-C / SIGTERM before
# every one left is killed; and the file where it says which of them is down, for health to
# read (runstack sets it for the processes it starts; empty: not under runstack).
RUNSTACK_GRACE_SECONDS = env.float("CXRQ_RUNSTACK_GRACE_SECONDS", default=10.0)
# A process of the stack that died is restarted after this many seconds, twice as long after each
# death in a row (at most 30 s; a process that ran a minute starts over).
RUNSTACK_RESTART_DELAY_SECONDS = env.float("CXRQ_RUNSTACK_RESTART_DELAY_SECONDS", default=1.0)
RUNSTACK_STATE_FILE = env.str("CXRQ_RUNSTACK_STATE_FILE", default="")
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A wake-up is acknowledged after it ran: a worker that dies mid-batch leaves it for
# another worker. Duplicate wake-ups are harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # kombu's default is ./control in the working directory; keep it with the broker.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Above the longest drain: Redis redelivers unacknowledged messages after this.
        "visibility_timeout": 3600,
        # The web process must never block an upload on a dead broker.
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
        "max_retries": 1,
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://")):
    # RabbitMQ (docs/operations.md#rabbitmq). Quorum queues: replicated by Raft across the
    # cluster's nodes and durable, where a classic queue lives on one node.
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"  # the dispatcher's `-Q` webhook queue
    # Quorum queues have no global QoS, so a worker cannot widen its prefetch to hold a delayed
    # message (a webhook retry): Celery's native delayed delivery parks those in the broker
    # instead, and it needs topic exchanges.
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
    # A consumer's link that died silently (a cut cable, a firewall dropping it) is noticed by
    # both ends within a few heartbeats, where Celery's 120 s leaves a wake-up delivered to the
    # dead link unacknowledged for minutes. Publishers (the web) negotiate none: they never idle-wait.
    CELERY_BROKER_HEARTBEAT = 10
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # The web process must never block an upload on a dead broker: a bounded connect, no
        # second try, bounded socket reads and writes (a hung broker, or one that blocks
        # publishers under a memory or disk alarm: the confirm, then closing the channel and the
        # connection, each time out), and the circuit breaker in backend/jobs/dispatch.py.
        "connect_timeout": 1,
        "read_timeout": 2,
        "write_timeout": 2,
        "max_retries": 0,
        # A send returns once the broker has the message (replicated, for a quorum queue):
        # a refused or lost publish is logged (event=wakeup_failed), never a silent drop.
        "confirm_publish": True,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}

# --- The HTTP edge (backend/edge/): one server for `make run` and production ---
# A request head (line + headers) must arrive within this many seconds of its first byte.
EDGE_HEADER_TIMEOUT_SECONDS = env.float("CXRQ_EDGE_HEADER_TIMEOUT_SECONDS", default=10.0)
# The whole body within this many seconds of the head: else 408 and the connection closes.
EDGE_BODY_TIMEOUT_SECONDS = env.float("CXRQ_EDGE_BODY_TIMEOUT_SECONDS", default=30.0)
EDGE_KEEPALIVE_SECONDS = env.int("CXRQ_EDGE_KEEPALIVE_SECONDS", default=5)
# The application's answer, once the request has arrived: else 503 request_took_too_long (0: none).
EDGE_REQUEST_TIMEOUT_SECONDS = env.float("CXRQ_EDGE_REQUEST_TIMEOUT_SECONDS", default=60.0)
# Open connections per web process past which new requests get 503 (0: no limit).
EDGE_MAX_CONNECTIONS = env.int("CXRQ_EDGE_MAX_CONNECTIONS", default=1000)
# Request line + headers, in bytes: 431 past it.
EDGE_MAX_HEAD_BYTES = env.int("CXRQ_EDGE_MAX_HEAD_BYTES", default=16 * 1024)
# The HTTP/1.1 parser: httptools (llhttp, C) or h11 (pure Python); both carry the same bounds.
EDGE_HTTP = env.str("CXRQ_EDGE_HTTP", default="httptools")
WEB_BACKLOG = env.int("CXRQ_WEB_BACKLOG", default=2048)
# Threads per web process that run Django (each keeps its database connection): backend/asgi.py.
WEB_THREADS = env.int("CXRQ_WEB_THREADS", default=4)
# Report requests (sr.dcm, fhir) one client may have in flight per web process; past it 429 with
# Retry-After, so one client cannot take every thread (backend/interop/limits.py). 0: no limit.
REPORT_CLIENT_CONCURRENCY = env.int("CXRQ_REPORT_CLIENT_CONCURRENCY", default=2)
# Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed (a reverse proxy); none by default.
TRUSTED_PROXIES = env.list("CXRQ_TRUSTED_PROXIES", default=[])
# The base of every absolute URL the API hands out (url, Location, pagination), e.g.
# https://cxrq.hospital.example; empty: from the request (development and tests).
PUBLIC_URL = env.str("CXRQ_PUBLIC_URL", default="").rstrip("/")

# A routine job waiting longer than this is claimed as if it were STAT (backend/jobs/models.py
# Priority): STAT work goes first, routine work is never starved for longer than this.
PRIORITY_PROMOTION_SECONDS = env.int("CXRQ_PRIORITY_PROMOTION_SECONDS", default=300)
# A queued job's ETA divides its place in the queue by the jobs finished in this window.
ETA_WINDOW_SECONDS = env.int("CXRQ_ETA_WINDOW_SECONDS", default=300)

# --- Retention (backend/jobs/services/deletion.py; `manage.py purge_expired`, and the dispatcher's
# schedule): days after a job ended. A client's own image/result_retention_days override these;
# 0: kept until deleted.
IMAGE_RETENTION_DAYS = env.int("CXRQ_IMAGE_RETENTION_DAYS", default=30)
RESULT_RETENTION_DAYS = env.int("CXRQ_RESULT_RETENTION_DAYS", default=365)
# How often the dispatcher runs the purge, in seconds.
PURGE_INTERVAL_SECONDS = env.int("CXRQ_PURGE_INTERVAL_SECONDS", default=3600)

# --- Webhooks (backend/webhooks/, docs/api.md#webhooks) ---
# Only https callback URLs (production turns this on); loopback hosts allowed for every client
# with no allow-list entry (development turns this on, so a local receiver works at once).
WEBHOOK_REQUIRE_HTTPS = env.bool("CXRQ_WEBHOOK_REQUIRE_HTTPS", default=False)
WEBHOOK_ALLOW_LOOPBACK = env.bool("CXRQ_WEBHOOK_ALLOW_LOOPBACK", default=False)
# One attempt's whole deadline (connect, send, answer), in seconds.
WEBHOOK_TIMEOUT_SECONDS = env.float("CXRQ_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Retries: the first after RETRY_BASE seconds, each next one twice as late (at most RETRY_MAX),
# with +-10% jitter; no attempt starts later than GIVE_UP seconds after the job ended.
WEBHOOK_RETRY_BASE_SECONDS = env.float("CXRQ_WEBHOOK_RETRY_BASE_SECONDS", default=5.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("CXRQ_WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
WEBHOOK_GIVE_UP_SECONDS = env.float("CXRQ_WEBHOOK_GIVE_UP_SECONDS", default=86400.0)
# The dispatcher's Celery queue and its threads (each delivery waits on the network, not the CPU).
WEBHOOK_QUEUE = env.str("CXRQ_WEBHOOK_QUEUE", default="cxrq-webhooks")
WEBHOOK_THREADS = env.int("CXRQ_WEBHOOK_THREADS", default=8)
# The dispatcher's schedule state (celery beat), kept across restarts.
DISPATCHER_SCHEDULE_FILE = Path(
    env.str("CXRQ_DISPATCHER_SCHEDULE_FILE", default=str(VAR_DIR / "dispatcher-schedule"))
)
# Deliveries due this long without an attempt (a lost message, a dispatcher restart) are sent again.
WEBHOOK_SWEEP_SECONDS = env.float("CXRQ_WEBHOOK_SWEEP_SECONDS", default=30.0)

# Images in one POST /api/v1/batches.
BATCH_MAX_IMAGES = env.int("CXRQ_BATCH_MAX_IMAGES", default=64)
# A whole POST /api/v1/batches body, in bytes (each image is still held to UPLOAD_MAX_BYTES).
BATCH_MAX_BYTES = env.int("CXRQ_BATCH_MAX_BYTES", default=256 * 1024 * 1024)
# --- The web client at / (backend/web/, docs/web.md) ---
# A browser's signed-in session lasts this many seconds; then the key is asked for again.
WEB_SESSION_SECONDS = env.int("CXRQ_WEB_SESSION_SECONDS", default=8 * 3600)
# Sign-in attempts per address ("0": no limit); a key is 190 random bits, this only bounds the noise.
WEB_SIGN_IN_RATE = env.str("CXRQ_WEB_SIGN_IN_RATE", default="30/min")

# --- Upload limits ---
UPLOAD_MAX_BYTES = env.int("CXRQ_UPLOAD_MAX_BYTES", default=32 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("CXRQ_IMAGE_MAX_PIXELS", default=50_000_000)
IMAGE_MIN_SIDE = env.int("CXRQ_IMAGE_MIN_SIDE", default=64)
# Per client, all its keys together (a client's own upload_rate / read_rate override them;
# "0" or empty: no limit). Counted where every web process sees the same count: RATE_LIMIT_URL.
UPLOAD_RATE = env.str("CXRQ_UPLOAD_RATE", default="6000/min")
READ_RATE = env.str("CXRQ_READ_RATE", default="60000/min")
MAX_QUEUE_DEPTH = env.int("CXRQ_MAX_QUEUE_DEPTH", default=2000)
# Jobs one client may have waiting at once (a client's own max_queued_jobs overrides it; 0: no
# cap): one client's backlog cannot fill the queue for everyone (429 client_queue_full).
CLIENT_MAX_QUEUED_JOBS = env.int("CXRQ_CLIENT_MAX_QUEUED_JOBS", default=500)
QUEUE_FULL_RETRY_AFTER_SECONDS = env.int("CXRQ_QUEUE_FULL_RETRY_AFTER_SECONDS", default=5)

# --- Image intake (docs/intake.md) ---
# Everything before a DICOM file's pixel data is parsed from at most this many bytes.
DICOM_MAX_HEADER_BYTES = env.int("CXRQ_DICOM_MAX_HEADER_BYTES", default=4 * 1024 * 1024)
# Apply the VOI LUT (window / LUT sequence) like xrv.utils.read_xray_dcm(voi_lut=True).
# Off by default, as in torchxrayvision; turning it on changes the model version.
DICOM_APPLY_VOI_LUT = env.bool("CXRQ_DICOM_APPLY_VOI_LUT", default=False)
# Burned In Annotation = YES means identifying text in the pixels: refused unless this is on.
DICOM_ACCEPT_BURNED_IN_ANNOTATION = env.bool("CXRQ_DICOM_ACCEPT_BURNED_IN_ANNOTATION", default=False)
# Upload file names often carry a patient's name or ID: stored only when this is on.
STORE_ORIGINAL_FILENAME = env.bool("CXRQ_STORE_ORIGINAL_FILENAME", default=False)
# Which images are chest X-rays (backend/jobs/eligibility.py); a client's `eligibility` overrides
# any of these. Absent attributes are accepted unless named in CXRQ_ELIGIBLE_REQUIRE.
ELIGIBLE_MODALITIES = env.list("CXRQ_ELIGIBLE_MODALITIES", default=["CR", "DX"])
# Secondary Capture / Other: accepted only with an eligible body part, or none unless
# CXRQ_ELIGIBLE_CAPTURE_REQUIRES_BODY_PART is on.
ELIGIBLE_CAPTURE_MODALITIES = env.list("CXRQ_ELIGIBLE_CAPTURE_MODALITIES", default=["OT", "SC"])
ELIGIBLE_CAPTURE_REQUIRES_BODY_PART = env.bool("CXRQ_ELIGIBLE_CAPTURE_REQUIRES_BODY_PART", default=False)
ELIGIBLE_BODY_PARTS = env.list("CXRQ_ELIGIBLE_BODY_PARTS", default=["CHEST"])
ELIGIBLE_VIEWS = env.list("CXRQ_ELIGIBLE_VIEWS", default=["PA", "AP"])
# Attributes an image must state (modality, body_part, view): with modality, PNG/JPEG are refused.
ELIGIBLE_REQUIRE = env.list("CXRQ_ELIGIBLE_REQUIRE", default=[])

# --- Leases, retries, sweeping (docs/reliability.md) ---
LEASE_SECONDS = env.float("CXRQ_LEASE_SECONDS", default=60.0)
# The claim on PostgreSQL ranks only the head of each client's queue, this many batches deep
# (backend/jobs/claim_order.py): deeper than the claimers that may hold its first rows at once.
CLAIM_HEAD_FACTOR = env.int("CXRQ_CLAIM_HEAD_FACTOR", default=4)
MAX_ATTEMPTS = env.int("CXRQ_MAX_ATTEMPTS", default=3)
RETRY_BACKOFF_SECONDS = env.float("CXRQ_RETRY_BACKOFF_SECONDS", default=2.0)
SWEEP_AFTER_SECONDS = env.float("CXRQ_SWEEP_AFTER_SECONDS", default=10.0)
DRAIN_MAX_SECONDS = env.float("CXRQ_DRAIN_MAX_SECONDS", default=10.0)
BATCH_TIME_LIMIT_SECONDS = env.int("CXRQ_BATCH_TIME_LIMIT_SECONDS", default=120)
WORKER_HEARTBEAT_SECONDS = env.float("CXRQ_WORKER_HEARTBEAT_SECONDS", default=5.0)
WORKER_LIVE_SECONDS = env.float("CXRQ_WORKER_LIVE_SECONDS", default=30.0)

# --- Model (docs/operations.md#model-weights) ---
# The sha256 of the official densenet121-res224-all weights. Set: the worker loads that
# file (CXRQ_MODEL_WEIGHTS_PATH, else torchxrayvision's cache) and verifies it before
# unpickling. Empty: the deterministic untrained fallback, where MODEL_ALLOW_FALLBACK.
MODEL_WEIGHTS_SHA256 = env.str("CXRQ_MODEL_WEIGHTS_SHA256", default="").lower()
MODEL_WEIGHTS_PATH = env.str("CXRQ_MODEL_WEIGHTS_PATH", default="")
if MODEL_WEIGHTS_SHA256 and not re.fullmatch(r"[0-9a-f]{64}", MODEL_WEIGHTS_SHA256):
    raise ImproperlyConfigured("CXRQ_MODEL_WEIGHTS_SHA256 must be a 64-hex-digit sha256")
if MODEL_WEIGHTS_PATH and not MODEL_WEIGHTS_SHA256:
    raise ImproperlyConfigured(
        "CXRQ_MODEL_WEIGHTS_PATH is set without CXRQ_MODEL_WEIGHTS_SHA256: set the sha256 of the official file"
    )
MODEL_ALLOW_FALLBACK = env.bool("CXRQ_MODEL_ALLOW_FALLBACK", default=True)
MODEL_CACHE_DIR = Path(env.str("CXRQ_MODEL_CACHE_DIR", default=str(VAR_DIR / "models")))
MODEL_CALIBRATION_DIR = Path(
    env.str("CXRQ_MODEL_CALIBRATION_DIR", default=str(BASE_DIR / "tests" / "data" / "cxr"))
)
# Test-only stand-in for the model (worker/runtime/fake.py); production refuses it.
MODEL_FAKE = env.bool("CXRQ_MODEL_FAKE", default=False)
FAKE_BATCH_MS = env.float("CXRQ_FAKE_BATCH_MS", default=5.0)
FAKE_IMAGE_MS = env.float("CXRQ_FAKE_IMAGE_MS", default=1.0)
FAKE_POISON = env.str("CXRQ_FAKE_POISON", default="")

# --- Inference engine (docs/performance.md) ---
# fp32, or fast: bf16 (CPU) / fp16 (CUDA) and reduced-scale JPEG decoding, kept only when the
# guard measures max |dprob| <= FAST_MAX_ABS_DIFF on the calibration images at start.
PRECISION = env.str("CXRQ_PRECISION", default="fp32")
FAST_MAX_ABS_DIFF = env.float("CXRQ_FAST_MAX_ABS_DIFF", default=0.02)
# Fast mode's ladder (worker/runtime/ladder.py): the precisions tried at start, in order, where the
# CPU offers them; the first within FAST_MAX_ABS_DIFF and at least FAST_MIN_SPEEDUP times as fast
# as fp32 (timed for about FAST_TIMING_SECONDS each) is kept, else fast runs the default.
FAST_CANDIDATES = env.list("CXRQ_FAST_CANDIDATES", default=["bf16", "int8"])
if set(FAST_CANDIDATES) - {"bf16", "int8"}:
    raise ImproperlyConfigured("CXRQ_FAST_CANDIDATES: a list of bf16, int8")
FAST_MIN_SPEEDUP = env.float("CXRQ_FAST_MIN_SPEEDUP", default=1.1)
if FAST_MIN_SPEEDUP < 1.0:
    raise ImproperlyConfigured("CXRQ_FAST_MIN_SPEEDUP must be >= 1: fast is never slower than fp32")
FAST_TIMING_SECONDS = env.float("CXRQ_FAST_TIMING_SECONDS", default=1.5)
# int8's quantization (worker/runtime/quantize.py: once per weights, calibration set and CPU, cached
# in MODEL_CACHE_DIR): no new sensitivity step starts after this many seconds.
FAST_INT8_BUDGET_SECONDS = env.float("CXRQ_FAST_INT8_BUDGET_SECONDS", default=120.0)
FAST_PREPROCESS = env.bool("CXRQ_FAST_PREPROCESS", default=True)
DEVICE = env.str("CXRQ_DEVICE", default="auto")  # auto: CUDA when torch sees a GPU
# "exact" (the fast exact path) or "reference" (torchxrayvision's scikit-image pipeline,
# for side-by-side load tests against the reference system).
PREPROCESS = env.str("CXRQ_PREPROCESS", default="exact")
# Unset (None): the value `make tune` measured best for this precision, from TUNED_CONFIG
# (worker/runtime/tuned.py reads it in the worker), else the built-in default there.
TUNED_CONFIG = Path(env.str("CXRQ_TUNED_CONFIG", default=str(BASE_DIR / "worker" / "runtime" / "tuned.json")))
BACKEND = env.str("CXRQ_BACKEND", default=None)  # onnxruntime | openvino | torch
TORCH_THREADS = env.int("CXRQ_TORCH_THREADS", default=None)  # every backend's; 0: one per core
PREPROCESS_WORKERS = env.int("CXRQ_PREPROCESS_WORKERS", default=None)
BATCH_MAX_SIZE = env.int("CXRQ_BATCH_MAX_SIZE", default=None)
BATCH_MAX_WAIT_MS = env.int("CXRQ_BATCH_MAX_WAIT_MS", default=None)
WORKER_CONCURRENCY = env.int("CXRQ_WORKER_CONCURRENCY", default=None)  # worker processes per `celery worker`
# A CPU with no entry in TUNED_CONFIG: a worker's first start measures a few batch sizes and thread
# counts for at most this long and caches the best in MODEL_CACHE_DIR/autotune.json
# (worker/runtime/autotune.py); 0 disables it. "before": the pool starts once it is done (or
# timed out); "background": the pool serves with the defaults meanwhile, the result applies at
# the next start. The test stand-in (MODEL_FAKE) is tuned only when the budget is set.
AUTOTUNE_BUDGET_S = env.float("CXRQ_AUTOTUNE_BUDGET_S", default=0.0 if MODEL_FAKE else 30.0)
AUTOTUNE_MODE = env.str("CXRQ_AUTOTUNE_MODE", default="before")
if AUTOTUNE_MODE not in ("before", "background"):
    raise ImproperlyConfigured("CXRQ_AUTOTUNE_MODE must be before or background")

# Where `make run` keeps the development client's API key. Development settings only:
# production never writes a key to disk.
DEV_API_KEY_FILE: Path | None = None

# --- Metrics and logs (docs/observability.md) ---
LOG_LEVEL = env.str("CXRQ_LOG_LEVEL", default="INFO")
# json: one JSON object per line (production's default); text: key=value lines for a person at a
# terminal (the default here, so development and tests). Both carry the request id and job id.
LOG_FORMAT = env.str("CXRQ_LOG_FORMAT", default="text")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("CXRQ_LOG_FORMAT must be json or text")
# The LOGGING dict below, and Python's warnings routed into it (backend/core/logging.py).
LOGGING_CONFIG = "backend.core.logging.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "backend.core.logging.RequestIdFilter"},
        "disallowed_host": {"()": "backend.core.log_filters.DisallowedHostFilter"},
        # What pydicom, highdicom and pynetdicom log, and every warning: text withheld, since
        # they quote values read from images (a patient's name); backend/core/logging.py.
        "dicom_values": {"()": "backend.core.logging.DicomValuesFilter"},
    },
    "formatters": {
        "text": {
            "format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        },
        "json": {"()": "backend.core.logging.JsonLineFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "dicom_values"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "celery": {"level": "INFO"},
        # pydicom logs every decoder plugin that fails on a frame at ERROR, with a traceback,
        # before trying the next one. A file no plugin decodes is refused (4xx) and logged
        # once as event=request_refused with its code; a worker fails the job with its code.
        "pydicom.pixels.decoders": {"level": "CRITICAL"},
        # A Host not in ALLOWED_HOSTS: one WARNING line, no traceback (anyone can send one).
        "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
        # Also here, for handlers this file does not make (Celery's worker installs its own).
        "py.warnings": {"filters": ["dicom_values"]},
    },
}

# GET /metrics (web) and the worker's metrics port answer a caller that sends
# `Authorization: Bearer <METRICS_TOKEN>` and, where METRICS_ALLOW_LOOPBACK, any caller on the
# same machine. Production turns loopback off: there only the token opens them.
METRICS_TOKEN = env.str("CXRQ_METRICS_TOKEN", default="")
METRICS_ALLOW_LOOPBACK = env.bool("CXRQ_METRICS_ALLOW_LOOPBACK", default=True)
# The worker's main process serves its pool's metrics on this port (0: not served).
WORKER_METRICS_PORT = env.int("CXRQ_WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDRESS = env.str("CXRQ_WORKER_METRICS_ADDRESS", default="127.0.0.1")
# Where each web server and each worker keeps its processes' metric files (a fresh folder per
# start, removed when it stops); empty: the system's temporary folder.
METRICS_DIR = env.str("CXRQ_METRICS_DIR", default="")
# Queue depth is labelled by client name for this many clients (those with most queued jobs);
# the rest are summed under client="other", so the number of series stays bounded.
METRICS_MAX_CLIENTS = env.int("CXRQ_METRICS_MAX_CLIENTS", default=20)
# Webhook attempt outcomes are counted over this many most recent attempts (a bounded read).
METRICS_WEBHOOK_ATTEMPTS_WINDOW = env.int("CXRQ_METRICS_WEBHOOK_ATTEMPTS_WINDOW", default=1000)

# --- The DICOM receiver (docs/interoperability.md): `manage.py run_dicom`, its own process ---
DICOM_AE_TITLE = env.str("CXRQ_DICOM_AE_TITLE", default="CXRQ")
DICOM_PORT = env.int("CXRQ_DICOM_PORT", default=11112)
DICOM_BIND_ADDRESS = env.str("CXRQ_DICOM_BIND_ADDRESS", default="0.0.0.0")
# A sender must call us by DICOM_AE_TITLE (else rejected, called AE title not recognised). `make run`
# turns it off for its receiver, so dcmtk's default called title (ANY-SCP) works as it is.
DICOM_REQUIRE_CALLED_AE_TITLE = env.bool("CXRQ_DICOM_REQUIRE_CALLED_AE_TITLE", default=True)
# Associations with senders served at once; one more is refused (A-ASSOCIATE-RJ, local limit
# exceeded). Connections that have not yet named a sender are counted apart (the next three).
DICOM_MAX_ASSOCIATIONS = env.int("CXRQ_DICOM_MAX_ASSOCIATIONS", default=8)
# Connections accepted but not yet identified as a sender, in all and from one peer address; past
# either a new connection is closed at accept, before a byte is read (backend/dicomnet/gate.py).
DICOM_MAX_PENDING = env.int("CXRQ_DICOM_MAX_PENDING", default=128)
DICOM_MAX_PENDING_PER_ADDRESS = env.int("CXRQ_DICOM_MAX_PENDING_PER_ADDRESS", default=8)
if not 1 <= DICOM_MAX_PENDING_PER_ADDRESS <= DICOM_MAX_PENDING:
    raise ImproperlyConfigured("CXRQ_DICOM_MAX_PENDING_PER_ADDRESS must be from 1 to CXRQ_DICOM_MAX_PENDING")
# Seconds from accept within which the whole A-ASSOCIATE-RQ must have arrived, not reset by each
# byte (a peer trickling its request is dropped, as the HTTP edge drops a trickled request head).
# The ACSE timeout below applies instead where it is smaller.
DICOM_ASSOCIATE_DEADLINE_SECONDS = env.float("CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS", default=10.0)
if not DICOM_ASSOCIATE_DEADLINE_SECONDS > 0:
    raise ImproperlyConfigured("CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS must be more than 0")
# The largest P-DATA PDU it accepts (bytes; 0 would mean unlimited, refused here).
DICOM_MAX_PDU_BYTES = env.int("CXRQ_DICOM_MAX_PDU_BYTES", default=65536)
if not 4096 <= DICOM_MAX_PDU_BYTES <= 16 * 1024 * 1024:
    raise ImproperlyConfigured("CXRQ_DICOM_MAX_PDU_BYTES must be between 4096 and 16777216")
# Seconds: waiting for an association request / release (ACSE), for the next DIMSE message, and
# for any network activity at all (a peer that connects and sends nothing is dropped after it).
DICOM_ACSE_TIMEOUT_SECONDS = env.float("CXRQ_DICOM_ACSE_TIMEOUT_SECONDS", default=30.0)
DICOM_DIMSE_TIMEOUT_SECONDS = env.float("CXRQ_DICOM_DIMSE_TIMEOUT_SECONDS", default=30.0)
DICOM_NETWORK_TIMEOUT_SECONDS = env.float("CXRQ_DICOM_NETWORK_TIMEOUT_SECONDS", default=60.0)
# The return path's PHI is sealed with the first of these url-safe base64 32-byte keys; all of them
# open (rotation). Empty: derived from DJANGO_SECRET_KEY (development and tests; production
# refuses to start). `python manage.py dicom_sender phi-key` prints a new key.
PHI_KEYS = env.list("CXRQ_PHI_KEY", default=[])
# Days a received instance that was not scored stays listed (API, web client, dashboard), counted
# from its last arrival; the receiver deletes older rows as it records new ones.
DICOM_UNSCORED_RETENTION_DAYS = env.int("CXRQ_DICOM_UNSCORED_RETENTION_DAYS", default=30)

# --- Results to PACS (backend/pacs/, docs/interoperability.md): C-STORE by the dispatcher ---
# Each of the association's timeouts (TCP connect, ACSE, DIMSE, network), in seconds.
PACS_TIMEOUT_SECONDS = env.float("CXRQ_PACS_TIMEOUT_SECONDS", default=30.0)
# Retries: the first after RETRY_BASE seconds, each next one twice as late (at most RETRY_MAX),
# with +-10% jitter; no attempt starts later than GIVE_UP seconds after the job ended.
PACS_RETRY_BASE_SECONDS = env.float("CXRQ_PACS_RETRY_BASE_SECONDS", default=10.0)
PACS_RETRY_MAX_SECONDS = env.float("CXRQ_PACS_RETRY_MAX_SECONDS", default=3600.0)
PACS_GIVE_UP_SECONDS = env.float("CXRQ_PACS_GIVE_UP_SECONDS", default=86400.0)
# Deliveries due this long without an attempt (a lost message, a dispatcher restart) are sent again.
PACS_SWEEP_SECONDS = env.float("CXRQ_PACS_SWEEP_SECONDS", default=30.0)

"""Production: fail fast on unsafe configuration.

Refuses to start with DEBUG on, the development secret key, the embedded
database/broker (Redis or RabbitMQ only), the test-only fake model, or without the sha256 of the official
model weights (the worker then refuses to start unless the file it loads matches).
"""

import base64
import binascii

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    CELERY_BROKER_URL,
    DATABASES,
    LOGGING,
    METRICS_TOKEN,
    MIDDLEWARE,
    MODEL_WEIGHTS_SHA256,
    PHI_KEYS,
    PUBLIC_URL,
    env,
)

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")  # no default: missing -> ImproperlyConfigured
if SECRET_KEY.startswith("dev-only") or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a real secret of 32+ characters")
if env.bool("DJANGO_DEBUG", default=False):
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production")
if not PUBLIC_URL.startswith("https://"):
    raise ImproperlyConfigured(
        "set CXRQ_PUBLIC_URL to the https:// address clients use: every URL the API hands out is built "
        "on it, never on the request's Host header"
    )
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("production needs DATABASE_URL pointing at PostgreSQL")
if not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
    raise ImproperlyConfigured(
        "production needs CELERY_BROKER_URL pointing at Redis (redis://, rediss://) or RabbitMQ "
        "(amqp://, amqps://): the embedded filesystem broker and memory:// serve one host only"
    )
if env.bool("CXRQ_MODEL_FAKE", default=False):
    raise ImproperlyConfigured("CXRQ_MODEL_FAKE is for tests only")
if not MODEL_WEIGHTS_SHA256:
    raise ImproperlyConfigured(
        "no model weights: set CXRQ_MODEL_WEIGHTS_SHA256 (and CXRQ_MODEL_WEIGHTS_PATH) to the official "
        "densenet121-res224-all weights (docs/operations.md); the untrained fallback is refused here"
    )
MODEL_ALLOW_FALLBACK = False
if not PHI_KEYS:
    raise ImproperlyConfigured(
        "set CXRQ_PHI_KEY: it seals the PHI kept to return DICOM results (docs/security.md); "
        "`python manage.py dicom_sender phi-key` prints a new one"
    )
for _phi_key in PHI_KEYS:
    try:
        _phi_key_bytes = base64.urlsafe_b64decode(_phi_key.strip() + "==")
    except (binascii.Error, ValueError):
        _phi_key_bytes = b""
    if len(_phi_key_bytes) != 32:
        raise ImproperlyConfigured("CXRQ_PHI_KEY: each key must be 32 bytes in url-safe base64")
MODEL_FAKE = False

# HTTPS only. TLS is terminated in front of the web process (a proxy or load balancer that
# sets X-Forwarded-Proto); plain HTTP is redirected, except health, for probes inside the network.
# The server (backend/edge/server.py) believes X-Forwarded-Proto only from CXRQ_TRUSTED_PROXIES
# and hands Django the scheme; Django itself reads no forwarded header (SECURE_PROXY_SSL_HEADER
# would believe any client).
# The redirect goes to CXRQ_PUBLIC_URL (backend/core/middleware.py HttpsRedirectMiddleware), not
# to Django's SECURE_SSL_REDIRECT target, which is built on the request's Host header. Its
# exemptions keep Django's setting name, SECURE_REDIRECT_EXEMPT.
SECURE_SSL_REDIRECT = False
if env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True):
    _security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware")
    MIDDLEWARE = [
        *MIDDLEWARE[:_security],
        "backend.core.middleware.HttpsRedirectMiddleware",
        *MIDDLEWARE[_security:],
    ]
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Checks that do not apply, with why: HSTS preload is a commitment for the whole domain, the
# operator's to make (DJANGO_SECURE_HSTS_PRELOAD); W008 asks for SECURE_SSL_REDIRECT, whose job
# HttpsRedirectMiddleware does (when DJANGO_SECURE_SSL_REDIRECT is off, W008 is reported).
SILENCED_SYSTEM_CHECKS = ["security.W021"]
if "backend.core.middleware.HttpsRedirectMiddleware" in MIDDLEWARE:
    SILENCED_SYSTEM_CHECKS.append("security.W008")
# Callbacks over https only; a loopback target only where an allow-list names it.
WEBHOOK_REQUIRE_HTTPS = env.bool("CXRQ_WEBHOOK_REQUIRE_HTTPS", default=True)
WEBHOOK_ALLOW_LOOPBACK = env.bool("CXRQ_WEBHOOK_ALLOW_LOOPBACK", default=False)

# --- Metrics and logs (docs/observability.md) ---
# JSON lines for the log collector; text stays available for a person at a console.
LOG_FORMAT = env.str("CXRQ_LOG_FORMAT", default="json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("CXRQ_LOG_FORMAT must be json or text")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
# Metrics only with the token: a caller on loopback may be a proxy relaying anyone. Without a
# token every scrape is refused (401), nothing else changes.
METRICS_ALLOW_LOOPBACK = env.bool("CXRQ_METRICS_ALLOW_LOOPBACK", default=False)
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("CXRQ_METRICS_TOKEN must be a real secret of 32+ characters")
# Scraped from inside the network (another container): every address, the token guards it.
WORKER_METRICS_PORT = env.int("CXRQ_WORKER_METRICS_PORT", default=9808)
WORKER_METRICS_ADDRESS = env.str("CXRQ_WORKER_METRICS_ADDRESS", default="0.0.0.0")
# Scrapes come from inside the network, like health probes: not redirected to https.
SECURE_REDIRECT_EXEMPT = [*SECURE_REDIRECT_EXEMPT, r"^metrics$"]

"""Production: fail fast on unsafe configuration.

Refuses to start with DEBUG on, the development secret key, the embedded
database/broker, or without verified official model weights.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, DATABASES, env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")  # no default: missing -> ImproperlyConfigured
if SECRET_KEY.startswith("dev-only") or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a real secret of 32+ characters")
if env.bool("DJANGO_DEBUG", default=False):
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production")
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("production needs DATABASE_URL pointing at PostgreSQL")
if not CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("production needs CELERY_BROKER_URL pointing at Redis")

MODEL_ALLOW_FALLBACK = False
if env.bool("CXRQ_MODEL_FAKE", default=False):
    raise ImproperlyConfigured("CXRQ_MODEL_FAKE is for tests only")
MODEL_FAKE = False
# The web process checks that weights are configured (worker.model_identity);
# the worker verifies their sha256 before unpickling and refuses to start otherwise.
from worker.model_identity import require_official_weights  # noqa: E402

require_official_weights(
    weights_path=env.str("CXRQ_MODEL_WEIGHTS_PATH", default=""),
    expected_sha256=env.str("CXRQ_MODEL_WEIGHTS_SHA256", default=""),
)

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

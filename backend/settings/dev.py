"""Local development (`make run`): embedded defaults, fallback model allowed."""

from .base import *  # noqa: F403
from .base import VAR_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
DEV_API_KEY_FILE = VAR_DIR / "dev-api-key"

"""Local development (`make run`): embedded defaults, fallback model allowed."""

from .base import *  # noqa: F403
from .base import VAR_DIR, env

# Off by default, so `make run` answers like production (the JSON error shape, no debug page with
# paths, settings and versions); `make run DJANGO_DEBUG=true` opts in, on your own machine.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
DEV_API_KEY_FILE = VAR_DIR / "dev-api-key"
# A receiver on this machine (http://127.0.0.1:9000/hook) works for every client at once.
WEBHOOK_ALLOW_LOOPBACK = env.bool("CXRQ_WEBHOOK_ALLOW_LOOPBACK", default=True)

"""Local development (`make run`): embedded defaults, fallback model allowed."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)

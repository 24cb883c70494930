"""Loaded with ``-p tests.testenv`` before Django starts: tests get their own var/ folder, so a
running `make run` (its database, media and broker folder) is never touched by the suite."""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LANDMARKS_VAR_DIR", str(_ROOT / "var" / "test"))
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

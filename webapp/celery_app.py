"""The Celery app, configured from the Django settings (``CELERY_*``).

The web process only *sends* tasks by name through this app; the task code lives in ``worker/`` and is
loaded by the worker process alone (``celery -A webapp.celery_app worker``).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("landmarks")
app.config_from_object("django.conf:settings", namespace="CELERY")

"""The worker's entry point: ``celery -A worker.celery worker -Q cpu,gpu,interactive``.

The same Celery app the web process sends with, plus the task modules that only workers load.
"""

from webapp.celery_app import app

app.conf.imports = ("worker.tasks",)

__all__ = ["app"]

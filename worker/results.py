"""The result backend for chord parts: django-celery-results' database backend, patient with outages.

A chord's parts store their results in the Django database, and the callback fires from there. Celery
stores a result *after* the task body returned, outside any retry of ours, and an error there ends a
solo-pool worker ("Unrecoverable error"). The stock backend retries only ``InterfaceError`` (a closed
connection); a database that is down or restarting raises ``OperationalError``, so this one retries that
too, on a fresh connection, with backoff (``CELERY_RESULT_BACKEND_*`` settings) for as long as a chunk
task waits for the database (``worker.tasks.DB_WAIT_SECONDS``).
"""

from __future__ import annotations

from django.db import OperationalError, connection
from django_celery_results.backends.database import DatabaseBackend


class PatientDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, OperationalError):
            connection.close()  # the next try connects again
            return True
        return super().exception_safe_to_retry(exc)

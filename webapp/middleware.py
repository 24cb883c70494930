"""A database outage answers 503 ("retry shortly") instead of a 500 with a traceback.

The database can fail anywhere in a request: in a view, while a template renders, or in the middleware
below this one (LoginRequiredMiddleware loads the session and the user before any view runs). Django turns
exceptions from the inner layers into 500 responses before they reach this middleware, so two hooks are
needed: ``process_exception`` for views, and the ``got_request_exception`` signal, which fires inside the
``except`` block for every other layer, to mark the request so ``__call__`` can swap the 500 for a 503.
"""

from __future__ import annotations

import logging
import sys

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

log = logging.getLogger(__name__)
DB_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER = 30
MESSAGE = "The database is unavailable at the moment. Please retry shortly."
API_MESSAGE = f"database unavailable; retry in {RETRY_AFTER} s"
_MARK = "_landmarks_db_unavailable"


def _mark_db_error(sender, request=None, **kwargs) -> None:
    exc = sys.exc_info()[1]  # the signal is sent from inside Django's except block
    if request is not None and isinstance(exc, DB_ERRORS):
        setattr(request, _MARK, exc)


got_request_exception.connect(_mark_db_error, dispatch_uid="landmarks-db-unavailable")


def unavailable_response(request) -> HttpResponse:
    """The 503 page (or JSON for the API). Renders without a request context: no session, no user, no DB."""
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": API_MESSAGE}, status=503)
    else:
        response = HttpResponse(render_to_string("503.html", {"message": MESSAGE, "retry_after": RETRY_AFTER}),
                                status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """Place it early in MIDDLEWARE (outside the session and authentication middleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        exc = getattr(request, _MARK, None)
        if exc is not None:
            log.warning("%s %s: database unavailable (%s); answered 503", request.method, request.path, exc)
            return unavailable_response(request)
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, DB_ERRORS):
            log.warning("%s %s: database unavailable (%s); answered 503", request.method, request.path, exception)
            return unavailable_response(request)
        return None

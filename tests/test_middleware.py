"""The 503 for a database outage, in-process: every query fails (Django's execute_wrapper), from the
session lookup in the middleware to the view. The real outage, with PostgreSQL stopped under gunicorn,
is tests/faults/test_outages.py."""

import json

import pytest
from django.db import OperationalError, connection
from django.test import Client

pytestmark = pytest.mark.django_db


def failing_database(execute, sql, params, many, context):
    raise OperationalError("server closed the connection unexpectedly")


def test_pages_answer_503_with_a_clear_message(viewer_user):
    client = Client(raise_request_exception=False)  # the test client would re-raise what Django handled
    client.force_login(viewer_user)
    with connection.execute_wrapper(failing_database):
        response = client.get("/landmarks/")
    page = response.content.decode()
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert "The database is unavailable at the moment. Please retry shortly." in page
    assert "server closed the connection" not in page  # no internals shown


def test_api_answers_503_json():
    client = Client(raise_request_exception=False)
    with connection.execute_wrapper(failing_database):
        response = client.get("/api/landmarks/1", HTTP_AUTHORIZATION="Token abc")
    assert response.status_code == 503 and json.loads(response.content) == {"error": "database unavailable; retry in 30 s"}


def test_other_errors_are_not_disguised_as_outages(viewer_user):
    client = Client(raise_request_exception=False)
    client.force_login(viewer_user)
    assert client.get("/landmarks/").status_code == 200
    assert client.get("/images/no-such-id/").status_code == 404

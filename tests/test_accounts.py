"""Accounts: the password reset says where its mail went (the embedded default prints it to the log)."""

import os
import re
import subprocess
import sys

import pytest
from django.urls import reverse

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db
CONSOLE = "django.core.mail.backends.console.EmailBackend"


def _text(response) -> str:
    """The page with its whitespace runs folded, as a reader sees it."""
    return " ".join(response.content.decode().split())


def test_the_embedded_default_prints_mail_to_the_log():
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                          "print(settings.EMAIL_BACKEND)"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == CONSOLE


def test_password_reset_prints_the_link_and_says_so(client, django_user_model, settings, capsys):
    settings.EMAIL_BACKEND = CONSOLE  # the test runner swaps in its in-memory backend; use the default's
    django_user_model.objects.create_user("ann", email="ann@example.org", password="pw-ann-12345")
    form = client.get(reverse("password_reset"))
    assert "written to the server's log" in _text(form)
    done = client.post(reverse("password_reset"), {"email": "ann@example.org"}, follow=True)
    page = _text(done)
    assert "No email was sent: no mail server is configured" in page
    assert "emailed you" not in page
    printed = capsys.readouterr().out
    assert "To: ann@example.org" in printed
    assert re.search(r"/accounts/reset/[\w-]+/[\w-]+/", printed), printed[-500:]


def test_with_a_mail_server_the_page_says_a_message_is_on_its_way(client, django_user_model, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    django_user_model.objects.create_user("ann", email="ann@example.org", password="pw-ann-12345")
    page = _text(client.post(reverse("password_reset"), {"email": "ann@example.org"}, follow=True))
    assert "a message with a link to set a new password is on its way" in page
    assert "server's log" not in page

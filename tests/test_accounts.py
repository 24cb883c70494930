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


def _login(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_failed_logins_lock_the_account_with_a_clear_message(client, django_user_model, settings):
    django_user_model.objects.create_user("ann", password="pw-ann-12345")
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):  # from several addresses: the account itself is counted
        assert _login(client, "ann", "wrong", f"10.0.0.{i + 1}").status_code == 200
    assert _login(client, "ann", "wrong", "10.0.0.50").status_code == 429  # the limit-th failure locks
    locked = _login(client, "ann", "pw-ann-12345", "10.0.0.99")  # even the right password, from elsewhere
    assert locked.status_code == 429
    text = _text(locked)
    assert "Too many failed logins" in text
    assert f"Logging in is blocked for 15 minutes: {limit} failed attempts" in text
    assert "for the account “ann”" in text
    assert "_auth_user_id" not in client.session


def test_failed_logins_from_one_address_lock_that_address(client, django_user_model, settings):
    django_user_model.objects.create_user("bob", password="pw-bob-12345")
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):  # a different (made-up) account each time
        assert _login(client, f"guess{i}", "wrong", "10.0.0.7").status_code == 200
    assert _login(client, "guess-last", "wrong", "10.0.0.7").status_code == 429
    assert _login(client, "bob", "pw-bob-12345", "10.0.0.7").status_code == 429
    ok = _login(client, "bob", "pw-bob-12345", "10.0.0.8")  # another address is not blocked
    assert ok.status_code == 302 and client.session["_auth_user_id"] == str(
        django_user_model.objects.get(username="bob").pk)


def test_a_successful_login_resets_the_count(client, django_user_model, settings):
    django_user_model.objects.create_user("cy", password="pw-cy-123456")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "cy", "wrong")
    assert _login(client, "cy", "pw-cy-123456").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "cy", "wrong").status_code == 200
    assert _login(client, "cy", "pw-cy-123456").status_code == 302


def test_the_login_page_of_a_fresh_install_says_where_the_admin_password_is(client, django_user_model):
    django_user_model.objects.create_superuser("admin", password="pw-admin-12345")
    text = _text(client.get(reverse("login")))
    assert "First run?</strong> Log in as <code>admin</code> with the password that <code>make run</code> printed" in text
    assert "<code>ADMIN_PASSWORD</code>" in text and "python manage.py changepassword admin" in text
    assert client.post(reverse("login"), {"username": "admin", "password": "pw-admin-12345"}).status_code == 302
    client.logout()
    assert "First run?" not in _text(client.get(reverse("login")))  # once someone has logged in

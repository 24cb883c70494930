"""Account pages in the site's layout: the login (which, on a fresh install, says where the admin password
is), the lockout page of login throttling (django-axes), and the password reset, which says where its
mail went."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.shortcuts import render

CONSOLE_BACKEND = "django.core.mail.backends.console.EmailBackend"


def mail_goes_to_log() -> bool:
    """True when no mail server is configured: the console backend prints each message to the log."""
    return settings.EMAIL_BACKEND == CONSOLE_BACKEND


class MailAwareContext:
    def get_context_data(self, **kwargs):
        return super().get_context_data(**kwargs) | {"mail_to_log": mail_goes_to_log()}


class LoginView(auth_views.LoginView):
    """Django's login; on a fresh install (nobody has logged in yet) it says where the admin password is."""

    def get_context_data(self, **kwargs):
        first_run = not get_user_model().objects.filter(last_login__isnull=False).exists()
        return super().get_context_data(**kwargs) | {"first_run": first_run}


class PasswordResetView(MailAwareContext, auth_views.PasswordResetView):
    pass


class PasswordResetDoneView(MailAwareContext, auth_views.PasswordResetDoneView):
    pass


def locked_out(request, original_response=None, credentials=None):
    """What a login blocked by django-axes answers (AXES_LOCKOUT_CALLABLE): why, and for how long."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    return render(request, "registration/locked_out.html", {
        "username": username, "failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes},
        status=settings.AXES_HTTP_RESPONSE_CODE)

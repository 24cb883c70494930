"""Account pages in the site's layout: the password reset, which says where its mail went."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views

CONSOLE_BACKEND = "django.core.mail.backends.console.EmailBackend"


def mail_goes_to_log() -> bool:
    """True when no mail server is configured: the console backend prints each message to the log."""
    return settings.EMAIL_BACKEND == CONSOLE_BACKEND


class MailAwareContext:
    def get_context_data(self, **kwargs):
        return super().get_context_data(**kwargs) | {"mail_to_log": mail_goes_to_log()}


class PasswordResetView(MailAwareContext, auth_views.PasswordResetView):
    pass


class PasswordResetDoneView(MailAwareContext, auth_views.PasswordResetDoneView):
    pass

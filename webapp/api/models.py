"""API keys: one per user, sent as ``Authorization: Token <key>``. Only a hash is stored."""

import hashlib
import secrets

from django.conf import settings
from django.db import models


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="The key's first characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user) -> str:
        """A new key for ``user`` (replacing any earlier one); the plain key is returned only now."""
        key = secrets.token_urlsafe(32)
        cls.objects.update_or_create(user=user, defaults={"key_hash": hash_key(key), "prefix": key[:8]})
        return key

"""python manage.py create_api_token USER: print a new API key for USER (replacing any earlier one)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.api.models import ApiToken


class Command(BaseCommand):
    help = "Create (or replace) USER's API key and print it."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **o):
        user = get_user_model().objects.filter(username=o["username"]).first()
        if user is None:
            raise CommandError(f"no user named {o['username']!r}")
        self.stdout.write(ApiToken.issue(user))

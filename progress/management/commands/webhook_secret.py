"""``manage.py webhook_secret <username> [--rotate]``: the key that signs a user's webhooks."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from progress.webhooks import secret_for


class Command(BaseCommand):
    """Print a user's webhook signing secret (made on first use), or a new one with --rotate."""

    help = "Print USERNAME's webhook signing secret; --rotate makes a new one (the old stops verifying)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The user, and whether to make a new secret."""
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the secret alone on stdout."""
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        self.stdout.write(secret_for(user, rotate=options["rotate"]))

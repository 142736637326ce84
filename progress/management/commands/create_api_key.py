"""``manage.py create_api_key <username> [--name N]``: a key for a script, printed alone on the last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from progress.keys import make_key


class Command(BaseCommand):
    """Make an API key for a user; it is shown once and kept only as a hash."""

    help = "Make an API key for USERNAME (Authorization: Bearer <key>); printed once, on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        """The user, and a name to tell the key apart by."""
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the key is for (shown in the admin)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the key's prefix and name to stderr, the key alone to stdout."""
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        row, key = make_key(user, options["name"])
        self.stderr.write(f"API key {row.prefix} for {options['username']}; it is not shown again:")
        self.stdout.write(key)

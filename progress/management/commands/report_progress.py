"""``manage.py report_progress``: publish a report from the shell or a script."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from progress.access import watch_token
from progress.conf import get_settings
from progress.publish import report_error, report_progress, wait_until_sent


class Command(BaseCommand):
    """Report progress (or, with --error, a failure) for a task, as a job would."""

    help = "Report progress for a task: report_progress TASK_ID STAGE PERCENTAGE [--message M]"

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the task, stage, percentage and options."""
        parser.add_argument("task_id")
        parser.add_argument("stage", nargs="?", choices=get_settings().stages.names)
        parser.add_argument("percentage", nargs="?", type=float, default=0)
        parser.add_argument("--message", default=None)
        parser.add_argument("--error", metavar="CODE", help="fail the task with this error code")
        parser.add_argument(
            "--token", action="store_true", help="also print a watch token for the task (for ?token=)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Validate, store and fan out; say whether the report changed the task."""
        try:
            if options["error"]:
                message = options["message"] or "The job failed."
                changed = report_error(options["task_id"], options["error"], message)
            else:
                if options["stage"] is None:
                    raise CommandError("a STAGE is required unless --error is given")
                changed = report_progress(
                    options["task_id"], options["stage"], options["percentage"], options["message"]
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        wait_until_sent()
        self.stdout.write("changed" if changed else "ignored (stale, repeated or final)")
        if options["token"]:
            self.stdout.write(f"watch token: {watch_token(options['task_id'])}")

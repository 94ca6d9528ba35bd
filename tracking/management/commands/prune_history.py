"""``python manage.py prune_history [--dry-run]``: one pass of retention now.

Removes the history older than TRACKING_HISTORY_DAYS (``tracking.retention``):
on PostgreSQL whole day partitions, detached and dropped; elsewhere rows in
chunks; rejected events and finished visits by the same rule. Prints what it
dropped and deleted, one line each, and exits 0: for a cron job or a systemd
timer (the README shows both). ``consume_events`` runs the same pass by itself.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from tracking import retention
from tracking.management.database import require_migrated


class Command(BaseCommand):
    help = (
        "Remove history older than TRACKING_HISTORY_DAYS: old day partitions dropped, "
        "old rows deleted in chunks; prints what went."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would go, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        now = timezone.now()
        report = retention.plan(now=now) if options["dry_run"] else retention.prune(now=now)
        for line in report.lines():
            self.stdout.write(line)

"""What an operator's command checks of its database before it starts."""

from __future__ import annotations

from django.core.management import CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from tracking.logsafe import one_line
from tracking.redaction import redacted


def require_migrated(*, outage_waited: bool = False, alias: str = DEFAULT_DB_ALIAS) -> None:
    """A ``CommandError`` saying what to do when the database lacks
    migrations (a cron job run from the wrong folder reads no ``.env`` and
    lands on an empty SQLite file, say) or cannot be reached, instead of the
    traceback of the first query on a missing table.

    With ``outage_waited`` a database that does not answer is left to the
    command, which waits it out (``consume_events``)."""
    connection = connections[alias]
    try:
        executor = MigrationExecutor(connection)
        missing = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        if outage_waited:
            return
        raise CommandError(
            f"cannot read the database ({connection.vendor}): "
            + one_line(" ".join(redacted(str(exc)).split()))
        ) from None
    if missing:
        where = connection.settings_dict.get("NAME") or alias
        raise CommandError(
            f"the database {redacted(str(where))} is not migrated ({len(missing)} migrations "
            "to apply): run `python manage.py migrate` first, with the same DATABASE_URL"
        )

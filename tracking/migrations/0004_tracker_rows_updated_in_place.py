"""Let PostgreSQL move a tracker's latest position in place.

Every batch rewrites the row of every tracker that moved. With no index on
``position_at`` and half of each page left free, PostgreSQL can write the new
row version beside the old one without touching any index (a HOT update),
which made that step about a third cheaper in bench/ingest.py. SQLite has no
such setting; only the index goes there.
"""

from django.db import migrations, models


def _set_fillfactor(value):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            table = schema_editor.quote_name(apps.get_model("tracking", "Tracker")._meta.db_table)
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {value})")

    return operation


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0003_eventhub_checkpoints"),
    ]

    operations = [
        migrations.AlterField(
            model_name="tracker",
            name="position_at",
            field=models.DateTimeField(blank=True, editable=False, null=True, verbose_name="last seen"),
        ),
        migrations.RunPython(_set_fillfactor(50), _set_fillfactor(100)),
    ]

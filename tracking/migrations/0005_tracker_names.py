"""Every tracker has a name: the ones registered on first sight, which had
none, get "Tracker" and the first eight characters of their device id."""

from django.db import migrations, models

# Trackers are thousands, not millions; still, a bounded number per statement.
CHUNK = 1000


def name_the_unnamed(apps, schema_editor):
    Tracker = apps.get_model("tracking", "Tracker")
    while True:
        unnamed = list(Tracker.objects.filter(name="").only("id")[:CHUNK])
        if not unnamed:
            return
        for tracker in unnamed:
            tracker.name = f"Tracker {str(tracker.id)[:8]}"
        Tracker.objects.bulk_update(unnamed, ["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0004_tracker_rows_updated_in_place"),
    ]

    operations = [
        migrations.AlterField(
            model_name="tracker",
            name="name",
            field=models.CharField(
                blank=True,
                help_text="Left empty, it is “Tracker” and the first eight characters of the device id.",
                max_length=100,
            ),
        ),
        migrations.RunPython(name_the_unnamed, migrations.RunPython.noop, elidable=True),
    ]

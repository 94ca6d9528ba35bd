"""Order each tracker's latest position by the earlier of its Ts and when it
was received, so a device clock running ahead cannot hold it in the future
(docs/protocol.md §1.3). Positions already stored were ordered by their Ts:
that is where they stand."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0006_api_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="tracker",
            name="ordered_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(
            "UPDATE tracking_tracker SET ordered_at = position_at",
            migrations.RunSQL.noop,
            elidable=True,
        ),
    ]

from django.db import migrations

# PostgreSQL estimates the groups of GROUP BY tenant, deployment, meter, tier as the product of
# the columns' distinct counts — six times too many for a month of rollups — and then sorts the
# whole month instead of hashing it. Extended statistics tell it how few combinations exist.
CREATE = ("CREATE STATISTICS IF NOT EXISTS usage_rollup_line_keys (ndistinct) "
          "ON tenant_id, deployment_id, meter_id, tier FROM billing_usagerollup")
DROP = "DROP STATISTICS IF EXISTS usage_rollup_line_keys"


def create_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0006_invoice_indexes"),
    ]

    operations = [
        migrations.RunPython(create_statistics, drop_statistics),
    ]

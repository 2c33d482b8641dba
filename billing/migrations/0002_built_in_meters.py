"""The built-in meters. Event shapes are in docs/metering.md."""

from django.db import migrations

BUILT_IN_METERS = [
    {"slug": "input_tokens", "name": "Input tokens", "unit": "token", "event_type": "inference.request",
     "aggregation": "sum", "value_property": "input_tokens",
     "description": "Prompt tokens processed."},
    {"slug": "output_tokens", "name": "Output tokens", "unit": "token", "event_type": "inference.request",
     "aggregation": "sum", "value_property": "output_tokens",
     "description": "Tokens generated."},
    {"slug": "requests", "name": "Requests", "unit": "request", "event_type": "inference.request",
     "aggregation": "sum", "value_property": "requests",
     "description": "Requests served (an event is one request unless its `requests` says more)."},
    {"slug": "accelerator_seconds", "name": "Accelerator-seconds", "unit": "accelerator-second",
     "event_type": "accelerator.usage", "aggregation": "sum", "value_property": "accelerator_seconds",
     "per_tier": True, "description": "Accelerators held by a deployment's replicas × seconds, by hardware tier."},
]


def create_meters(apps, schema_editor):
    Meter = apps.get_model("billing", "Meter")
    for fields in BUILT_IN_METERS:
        Meter.objects.update_or_create(slug=fields["slug"], defaults={**fields, "built_in": True})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_metering")]
    operations = [migrations.RunPython(create_meters, migrations.RunPython.noop)]

"""`manage.py reconcile_once`: one reconcile pass now (what the beat-scheduled task does)."""

import json

from django.core.management.base import BaseCommand

from scheduler.reconcile import reconcile_pass


class Command(BaseCommand):
    help = "Run one reconcile pass (skipped when another pass holds the lock) and print its summary as JSON."

    def handle(self, *args, **options):
        report = reconcile_pass()
        self.stdout.write(json.dumps(report.summary()))

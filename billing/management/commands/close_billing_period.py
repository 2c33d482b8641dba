from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing.invoicing import period_close
from tenants.errors import ServiceError


class Command(BaseCommand):
    help = ("Finalize the invoices of past months now (what the daily beat task does): every month due, or "
            "one (--period 2026-01). Idempotent: a month already closed has nothing left to do.")

    def add_arguments(self, parser):
        parser.add_argument("--period", metavar="YYYY-MM", help="Only this month.")

    def handle(self, *args, **options):
        period = None
        if options["period"]:
            try:
                period = date.fromisoformat(f"{options['period']}-01")
            except ValueError:
                raise CommandError(f"--period {options['period']!r}: write the month as YYYY-MM, e.g. 2026-01.") \
                    from None
        try:
            report = period_close(period=period)
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"Finalized {len(report.finalized)} invoice(s)"
                          + (f": {report.finalized[0]} … {report.finalized[-1]}" if report.finalized else "") + ".")
        if report.skipped:
            self.stdout.write(f"{report.skipped} draft(s) held by another run were left to it.")
        for invoice_id, reason in report.failed.items():
            self.stderr.write(f"Invoice {invoice_id} stays a draft: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} invoice(s) could not be finalized (reasons above); fix them "
                               f"and run again.")

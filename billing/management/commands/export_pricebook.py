from django.core.management.base import BaseCommand, CommandError

from billing.pricebooks import pricebook_export
from tenants.errors import ServiceError


class Command(BaseCommand):
    help = ("Print a price book as YAML (format: docs/pricing.md): the default book of a currency, or a "
            "tenant's contract in force this month. `import_pricebook` reads it back.")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="Export this tenant's contract instead.")
        parser.add_argument("--currency", default="USD", help="The default book of this currency (default USD).")

    def handle(self, *args, **options):
        try:
            self.stdout.write(pricebook_export(tenant_slug=options["tenant"], currency=options["currency"]), ending="")
        except ServiceError as error:
            raise CommandError(error.message) from None

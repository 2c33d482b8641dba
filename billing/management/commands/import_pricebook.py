import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.pricebooks import PriceBookInvalid, pricebook_import


class Command(BaseCommand):
    help = ("Create or replace a price book from a YAML file (format: docs/pricing.md). A book without "
            "`tenant` becomes the default book of its currency; with `tenant`, that tenant's contract.")

    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("file", help="The price book, YAML (`-` reads standard input).")

    def handle(self, *args, **options):
        name = options["file"]
        try:
            text = (options.get("stdin") or sys.stdin).read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read {name}: {error}") from None
        try:
            book, created = pricebook_import(text=text)
        except PriceBookInvalid as error:
            problems = "\n".join(f"  {path}: {message}" if path else f"  {message}" for path, message in error.errors)
            raise CommandError(f"{name} is not a valid price book ({len(error.errors)} problem"
                               f"{'s' if len(error.errors) != 1 else ''}):\n{problems}") from None
        what = f"contract of {book.tenant.slug}" if book.tenant_id else f"default {book.currency} book"
        self.stdout.write(f"{'Created' if created else 'Replaced'} {book.name!r} ({what}, "
                          f"{book.prices.count()} prices).")

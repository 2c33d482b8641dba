import json

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants import services
from tenants.context import system_actor
from tenants.errors import ServiceError
from tenants.roles import ALL_SCOPES


class Command(BaseCommand):
    help = "Create a tenant, its owner and an API key; print the key (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The tenant's display name.")
        parser.add_argument("--owner", required=True, help="Owner's email; an existing user is reused.")
        parser.add_argument("--password", help="Owner's password (new users only); without it they use a reset.")
        parser.add_argument("--country", default="US", help="Billing country, ISO 3166-1 alpha-2 (default US).")
        parser.add_argument("--currency", default="USD", help="Billing currency, ISO 4217 (default USD).")
        parser.add_argument("--scopes", nargs="+", default=sorted(ALL_SCOPES), metavar="SCOPE",
                            help=f"Scopes of the API key (default: all of {', '.join(sorted(ALL_SCOPES))}).")
        parser.add_argument("--key-name", default="created by create_tenant")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")

    def handle(self, *args, **options):
        try:
            with transaction.atomic():
                tenant, user = services.tenant_create(
                    name=options["name"], owner_email=options["owner"], owner_password=options["password"],
                    billing_country=options["country"], currency=options["currency"],
                )
                _key, plaintext = services.api_key_create(
                    actor=system_actor(tenant), name=options["key_name"], scopes=options["scopes"]
                )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        if options["json"]:
            self.stdout.write(json.dumps({"tenant": str(tenant.public_id), "slug": tenant.slug,
                                          "owner": user.email, "api_key": plaintext}))
        else:
            self.stdout.write(f"Tenant {tenant.name} ({tenant.slug}), owner {user.email}\n"
                              f"API key (shown once, store it now):\n{plaintext}")

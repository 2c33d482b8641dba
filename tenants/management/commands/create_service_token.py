import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants import services
from tenants.errors import ServiceError
from tenants.models import User
from tenants.roles import ALL_SERVICE_SCOPES


class Command(BaseCommand):
    help = "Create an operator service token (sy_svc_…) and print it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the token is for, e.g. 'gateway eu-north1'.")
        parser.add_argument("--scopes", nargs="+", default=sorted(ALL_SERVICE_SCOPES), metavar="SCOPE",
                            help=f"Scopes (default: all of {', '.join(sorted(ALL_SERVICE_SCOPES))}).")
        parser.add_argument("--created-by", metavar="EMAIL", help="The staff user responsible for the token.")
        parser.add_argument("--expires-in-days", type=int, metavar="DAYS", help="Expire after this many days.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")

    def handle(self, *args, **options):
        created_by = None
        if options["created_by"]:
            created_by = User.objects.filter(email=options["created_by"].lower()).first()
            if created_by is None:
                raise CommandError(f"No user {options['created_by']}.")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            token, plaintext = services.service_token_create(
                name=options["name"], scopes=options["scopes"], created_by=created_by, expires_at=expires_at)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        if options["json"]:
            self.stdout.write(json.dumps({"name": token.name, "scopes": token.scopes, "token": plaintext,
                                          "expires_at": expires_at.isoformat() if expires_at else None}))
        else:
            self.stdout.write(f"Service token {token.name}, scopes {', '.join(token.scopes)}\n"
                              f"Token (shown once, store it now):\n{plaintext}")

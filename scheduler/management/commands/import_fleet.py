from django.core.management.base import BaseCommand, CommandError

from scheduler import services
from scheduler.fleet_file import FleetFileError
from tenants.errors import ServiceError


class Command(BaseCommand):
    help = ("Create or update the fleet (regions → zones → node groups) from a YAML or JSON file. "
            "Idempotent: nodes are matched by name; none is ever duplicated or removed. See docs/fleet.md.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="The fleet file (scheduler/data/demo_fleet.yaml is an example).")
        parser.add_argument("--dry-run", action="store_true", help="Validate the file and write nothing.")

    def handle(self, *args, **options):
        try:
            if options["dry_run"]:
                self._validate(options["file"])
            else:
                self._report(services.fleet_import_file(options["file"]))
        except FleetFileError as error:
            problems = "\n".join(f"  {path}: {message}" if path else f"  {message}"
                                 for path, message in error.problems)
            raise CommandError(f"{options['file']} is not a valid fleet file:\n{problems}") from None
        except ServiceError as error:
            raise CommandError(error.message) from None

    def _validate(self, path: str) -> None:
        try:
            text = open(path).read()
        except OSError as error:
            raise FleetFileError([("", f"cannot read {path}: {error.strerror}")]) from None
        spec = services.fleet_spec_from_text(text)
        self.stdout.write(f"{path} is valid: {len(spec.regions)} regions, {len(spec.zones)} zones, "
                          f"{len(spec.nodes)} nodes. Nothing was written (--dry-run).")

    def _report(self, result: services.FleetImportResult) -> None:
        self.stdout.write(f"Fleet imported: {result.regions_created} regions and {result.zones_created} zones "
                          f"created; {result.nodes_created} nodes created, {result.nodes_updated} updated, "
                          f"{result.nodes_unchanged} unchanged.")
        if result.nodes_not_in_file:
            shown = ", ".join(result.nodes_not_in_file[:20]) + (" …" if len(result.nodes_not_in_file) > 20 else "")
            self.stdout.write(f"{len(result.nodes_not_in_file)} nodes not in the file were left as they are "
                              f"(cordon or drain them to retire them): {shown}")

import gc
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from scheduler.placement import plan_to_dict, read_problem_file, solve


class Command(BaseCommand):
    help = ("Solve a placement problem (DESIGN.md, \"File formats → Placement problem\") and print the plan as "
            "JSON. Needs no database. Exit 2 on bad input.")
    # Pure computation: no system checks, no migration check, no database access.
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("file", help="Problem JSON file, or - for stdin.")
        parser.add_argument("--explain", action="store_true",
                            help="Add a 'decisions' list: the chosen option, its cost and the rejected "
                                 "alternatives with why, per deployment.")

    def handle(self, *args, **options):
        # Django's start-up leaves a large heap that every full collection would walk again while
        # the solver allocates; it is long-lived, so move it out of the collector's sight.
        gc.freeze()
        # Parsing and solving allocate hundreds of thousands of small objects and no garbage worth
        # a cyclic collection: the collector stays off while they run (its passes over them were
        # a quarter of a fleet-scale run); what they leave is frozen like the start-up heap.
        enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                problem = read_problem_file(options["file"])
            except ValueError as error:
                raise CommandError(str(error), returncode=2) from None
            plan = solve(problem)
            # Straight to stdout, as one string: a large fleet's plan is megabytes, Django's
            # OutputWrapper would only add a copy, and json.dump (unlike dumps) skips the C encoder.
            sys.stdout.write(json.dumps(plan_to_dict(plan, explain=options["explain"])) + "\n")
        finally:
            gc.freeze()
            if enabled:
                gc.enable()

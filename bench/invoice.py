"""Closing a month: 10,000 tenants' invoices (2 deployments × 3 meters × 30 days of hourly rollups each) ÷ one SQL GROUP BY over the same rows.

Needs PostgreSQL (DATABASE_URL=postgres://…): a dedicated database is created for the run and
dropped after. Setup, not timed: migrate, the default USD price book, 10,000 tenants (US, DE,
IE, FR and JP customers; a few with prepaid credit) and 20,000 deployments through the ORM, then
the rollups: ONE PER HOUR, as the product stores usage — 10,000 × 2 × 3 × 30 × 24 = 43.2 million
rows (about 10 GB with indexes; loading takes several minutes). PostgreSQL generates them
itself into the table stripped of its indexes and constraints, which are rebuilt after.
`--granularity day` loads one rollup per day instead (1.8 million rows): the close's work is
the same (the same 60,000 lines) while the baseline reads 24 times fewer rows, so that ratio
shows the close's fixed cost per invoice.

Timed, in this process, against the same database:
- baseline: `SELECT tenant_id, meter_id, sum(quantity) FROM billing_usagerollup WHERE
  billing_period = … GROUP BY tenant_id, meter_id` — the cost of merely reading the month's
  data (best of three runs, rows fetched);
- subject: `billing.invoicing.period_close` for that month, the real service (claims, the
  exclusive billing-period lock, rating, credits, tax, numbering, lines, ledger, ClosedPeriod),
  once — a closed month has nothing left to close.
Then it checks the outcome: one finalized invoice per tenant, numbers gapless, and Σ line
amounts = Σ subtotals.
"""

from __future__ import annotations

import io
import os
import sys
import time
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from bench.common import (
    BenchEnvironment,
    BenchmarkFailed,
    Target,
    exit_status,
    machine_facts,
    print_header,
    print_table,
    print_verdict,
    run_guarded,
)

TARGET = Target("<=", 10.0)
PERIOD = date(2026, 10, 1)
CLOSE_AT = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
METERS = ("input_tokens", "output_tokens", "accelerator_seconds")
TIER = "h100-80gb-on-demand"
BASELINE_SQL = ("SELECT tenant_id, meter_id, sum(quantity) FROM billing_usagerollup WHERE billing_period = %s "
                "GROUP BY tenant_id, meter_id")
HOW_TO_READ = (
    "closing the month (rating, credits, tax, numbering and writing every invoice, line and ledger entry in "
    "one transaction per chunk of tenants) takes this many times as long as merely reading the month's "
    "rollups with one GROUP BY; ≤ 10 means the close costs about as much as a few passes over its data."
)


def add_arguments(parser) -> None:
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants (default 10,000)")
    parser.add_argument("--days", type=int, default=30, help="days of rollups per deployment × meter (default 30)")
    parser.add_argument("--granularity", choices=["hour", "day"], default="hour",
                        help="one rollup per hour (default: as the product stores usage) or per day (24 times "
                             "fewer rows to read, so the close's fixed cost per invoice weighs more)")
    parser.add_argument("--chunk", type=int, default=1000, help="tenants per close transaction (default 1,000)")
    parser.add_argument("--profile", action="store_true", help="print where the close spends its time (cProfile)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")


def run(args) -> int:
    url = os.environ.get("DATABASE_URL", "")
    if urllib.parse.urlsplit(url).scheme not in {"postgres", "postgresql", "pgsql"}:
        print("python -m bench invoice needs PostgreSQL: set DATABASE_URL=postgres://user@host:5432/db (a role that "
              "may CREATE DATABASE; a throw-away database is made for the run and dropped after).", file=sys.stderr)
        return 2
    if args.tenants < 1 or not 1 <= args.days <= 31 or args.chunk < 1:
        print("python -m bench invoice: --tenants and --chunk must be positive, --days 1–31", file=sys.stderr)
        return 2
    return run_guarded(_run, args, on_interrupt="temporary database dropped")


def _run(args) -> int:
    facts = machine_facts()
    steps_per_day = 24 if args.granularity == "hour" else 1
    rows = args.tenants * 2 * len(METERS) * args.days * steps_per_day
    with BenchEnvironment(keep=args.keep) as environment:
        facts.update({
            "database": environment.database,
            "data": f"{args.tenants:,} tenants × 2 deployments × {len(METERS)} meters × {args.days} days × "
                    f"{steps_per_day} = {rows:,} rollups, one per {args.granularity}, month {PERIOD:%Y-%m}",
            "close": f"billing.invoicing.period_close in this process, {args.chunk:,} tenants per transaction",
        })
        print_header("invoice", facts)
        print("setting up: migrate …", flush=True)
        environment.manage("migrate", "--noinput")
        _django(environment.env)
        started = time.perf_counter()
        _load(args, environment.env["DATABASE_URL"])
        print(f"loaded in {time.perf_counter() - started:.1f} s (not timed)\n", flush=True)

        baseline = min(_baseline(environment.env["DATABASE_URL"]) for _ in range(3))
        subject, report = _close(args)
        _check(args, report)
    ratio = subject / baseline
    print_table(["measure", "seconds", "per tenant"], [
        ["baseline: one GROUP BY of the month's rollups (best of 3)", f"{baseline:.3f}",
         f"{baseline / args.tenants * 1e3:.3f} ms"],
        ["period_close for the month", f"{subject:.3f}", f"{subject / args.tenants * 1e3:.3f} ms"],
    ])
    met = print_verdict(figure_name="close ÷ GROUP BY", figure=ratio, target=TARGET, how_to_read=HOW_TO_READ)
    return exit_status(met, args)


def _django(env: dict) -> None:
    os.environ.update({key: value for key, value in env.items() if key.startswith(("SWITCHYARD_", "DATABASE_URL",
                                                                                 "DJANGO_", "REDIS_URL"))})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()


def _load(args, database_url: str) -> None:
    """Price book, tenants, deployments (ORM, bulk), then the rollups (below); then ANALYZE."""
    from billing.invoicing import credit_grant_create
    from billing.models import BillingProfile
    from billing.pricebooks import pricebook_import_default
    from scheduler.models import Deployment
    from tenants.context import system_actor
    from tenants.models import Tenant

    pricebook_import_default()
    countries = ["US", "US", "DE", "IE", "FR", "JP"]
    tenants = Tenant.objects.bulk_create([
        Tenant(name=f"Bench {n}", slug=f"bench-{n}", billing_country=countries[n % len(countries)], currency="USD",
               created_at=datetime(2026, 1, 1, tzinfo=UTC)) for n in range(args.tenants)], batch_size=5000)
    BillingProfile.objects.bulk_create([
        BillingProfile(tenant=tenant, legal_name=f"{tenant.name} Inc.", is_business=n % 5 != 0,
                       vat_id="DE136695976" if tenant.billing_country == "DE" and n % 2 else "")
        for n, tenant in enumerate(tenants)], batch_size=5000)
    for tenant in tenants[::50]:  # one tenant in 50 has prepaid credit
        credit_grant_create(actor=system_actor(tenant), kind="prepaid", amount=Decimal("25.00"),
                            effective_at=datetime(2026, 1, 1, tzinfo=UTC))
    Deployment.objects.bulk_create([
        Deployment(tenant=tenant, name=f"serving-{index}", slo_ttft_p95_ms=2000, slo_tpot_p95_ms=100,
                   requests_per_s=1, input_tokens=512, input_tokens_p95=1024, output_tokens=256,
                   output_tokens_p95=512, status="ready")
        for tenant in tenants for index in (1, 2)], batch_size=5000)
    _load_rollups(args, database_url)


# Per rollup, uniform: tokens up to 3 million a day, accelerator-seconds up to the whole step.
ROLLUP_SQL = """
INSERT INTO billing_usagerollup (tenant_id, deployment_id, meter_id, tier, dimensions_key, dimensions, hour,
                                 billing_period, quantity, event_count, latest_time, updated_at)
SELECT d.tenant_id, d.id, m.id, CASE WHEN m.slug = 'accelerator_seconds' THEN %(tier)s ELSE '' END, '', '{}',
       step.hour, %(period)s,
       floor(random() * CASE WHEN m.slug = 'accelerator_seconds' THEN %(step_seconds)s
                             ELSE 3000000.0 * %(step_seconds)s / 86400 END),
       1, NULL, now()
FROM scheduler_deployment d
CROSS JOIN billing_meter m
CROSS JOIN generate_series(%(start)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS step(hour)
WHERE m.slug = ANY(%(meters)s)
"""


def _load_rollups(args, database_url: str) -> None:
    """The rollups, made by PostgreSQL itself (generate_series) — 43 million hourly rows are far
    too many to send from Python — into the table without its indexes and constraints, which are
    then rebuilt as they were (as a bulk load does; the same table and indexes as the product's)."""
    import psycopg

    from billing.models import UsageRollup

    table = UsageRollup._meta.db_table
    start = datetime(PERIOD.year, PERIOD.month, 1, tzinfo=UTC)
    step_seconds = 3600 if args.granularity == "hour" else 86400
    steps = args.days * 86400 // step_seconds
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        constraints = cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "ORDER BY contype = 'f'", [table]).fetchall()  # primary and unique keys before foreign keys
        indexes = cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [table, table]).fetchall()
        for name, _ in reversed(constraints):
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SELECT setseed(0.20261202)")
        cursor.execute(ROLLUP_SQL, {
            "tier": TIER, "period": PERIOD, "step_seconds": step_seconds, "start": start,
            "last": start + timedelta(seconds=step_seconds * (steps - 1)), "step": f"{step_seconds} seconds",
            "meters": list(METERS)})
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            cursor.execute(definition)
        rebuilt = cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [table]).fetchone()[0]
        if rebuilt != len(indexes) + sum(1 for _, definition in constraints if not definition.startswith("FOREIGN")):
            raise BenchmarkFailed(f"{table} did not get its indexes back after the load")
        connection.commit()
        connection.autocommit = True
        cursor.execute("VACUUM ANALYZE")


def _baseline(database_url: str) -> float:
    import psycopg

    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(BASELINE_SQL, [PERIOD])
        rows = cursor.fetchall()
        seconds = time.perf_counter() - started
    if not rows:
        raise BenchmarkFailed("the baseline GROUP BY found no rows")
    return seconds


def _close(args):
    from billing.invoicing import period_close

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        report = period_close(period=PERIOD, now=CLOSE_AT, chunk_size=args.chunk)
        profiler.disable()
        seconds = time.perf_counter() - started
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
        return seconds, report
    started = time.perf_counter()
    report = period_close(period=PERIOD, now=CLOSE_AT, chunk_size=args.chunk)
    return time.perf_counter() - started, report


def _check(args, report) -> None:
    from django.db.models import Sum

    from billing.models import Invoice, InvoiceLine

    if report.failed:
        first = next(iter(report.failed.items()))
        raise BenchmarkFailed(f"{len(report.failed)} invoices could not be finalized, e.g. {first}")
    finalized = Invoice.objects.filter(period=PERIOD, status=Invoice.Status.FINALIZED)
    count = finalized.count()
    if count != args.tenants or len(report.finalized) != args.tenants:
        raise BenchmarkFailed(f"{count} finalized invoices for {args.tenants} tenants")
    numbers = sorted(int(number.rsplit("-", 1)[1]) for number in finalized.values_list("number", flat=True))
    if numbers != list(range(1, args.tenants + 1)):
        raise BenchmarkFailed("invoice numbers are not gapless")
    lines = InvoiceLine.objects.filter(invoice__period=PERIOD).aggregate(total=Sum("amount"))["total"]
    subtotals = finalized.aggregate(total=Sum("subtotal"))["total"]
    if lines != subtotals:
        raise BenchmarkFailed(f"Σ line amounts {lines} ≠ Σ subtotals {subtotals}")
    line_count = InvoiceLine.objects.filter(invoice__period=PERIOD).count()
    total = finalized.aggregate(total=Sum("total"))["total"]
    print(f"checked: {count:,} finalized invoices, numbers 1–{args.tenants:,} gapless, {line_count:,} lines, "
          f"Σ lines = Σ subtotals = {subtotals} USD, Σ totals {total} USD\n", flush=True)

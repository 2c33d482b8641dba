"""Billing's API for tenants. Reads (`read` scope): meter definitions (GET /api/v1/meters), usage
(GET /api/v1/usage, JSON or CSV) and a deployment's metrics (GET /api/v1/deployments/{id}/metrics),
from rollups only, never raw usage events. Money (`billing` scope): prices, credits, invoices and
their drill-down (read-only), budgets, and the billing profile (GET/PATCH /api/v1/billing/profile).
Ingestion (POST /api/v1/usage/events, for the fleet's service tokens) is in billing/ingest_api.py.
"""

import csv
import re
from datetime import UTC, date, datetime, timedelta

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import urlencode
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing import budgets, documents, profiles, selectors
from billing.metrics import smallest_step_for, step_count
from billing.models import Budget, Invoice
from billing.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    CursorError,
    decode_cursor,
    encode_cursor,
    keyset_page,
)
from scheduler.models import Deployment
from tenants.problems import PROBLEM_CONTENT_TYPE
from tenants.pagination import PagePagination
from tenants.rest import StrictSerializer, TenantAPIView, page_of, valid
from tenants.roles import Scope
from tenants.schema import Problem

# --- shared input fields ----------------------------------------------------------------------

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DURATION = re.compile(r"^(\d{1,7})([smhd])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InstantField(serializers.Field):
    """An RFC 3339 time (`2025-03-01T12:00:00Z`; no offset means UTC) or a date (`2025-03-01`).

    A date is the start of that UTC day — or, with `end_of_day`, its end (the next midnight),
    so `end=2025-03-31` includes the 31st.
    """

    default_error_messages = {
        "invalid": "Use an RFC 3339 time such as 2025-03-01T00:00:00Z, or a date such as 2025-03-01 (in a URL, "
                   "write a '+' offset as %2B).",
    }

    def __init__(self, *, end_of_day: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.end_of_day = end_of_day

    def to_internal_value(self, value):
        text = str(value).strip()
        try:
            if _DATE_ONLY.match(text):
                day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
                return day + timedelta(days=1) if self.end_of_day else day
            moment = parse_datetime(text)
        except (ValueError, OverflowError):
            moment = None
        if moment is None:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def to_representation(self, value):
        return value.isoformat()


class DurationField(serializers.Field):
    """A duration as a whole number and a unit: `90s`, `15m`, `1h`, `7d`."""

    default_error_messages = {"invalid": "Write a duration as a number and a unit (s, m, h, d), e.g. 15m or 1h."}

    def to_internal_value(self, value):
        match = _DURATION.match(str(value).strip())
        if not match:
            self.fail("invalid")
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds <= 0:
            self.fail("invalid")
        return timedelta(seconds=seconds)

    def to_representation(self, value):
        return f"{int(value.total_seconds())}s"


def _decimal_text(value) -> str:
    """A quantity as exact decimal text, without exponent or trailing zeros ("812", "0.25")."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --- meters -------------------------------------------------------------------------------------


class MeterOutput(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    unit = serializers.CharField()
    description = serializers.CharField()
    event_type = serializers.CharField(help_text="The CloudEvents `type` this meter counts.")
    aggregation = serializers.ChoiceField(choices=["sum", "count", "max", "unique_count", "latest"])
    value_property = serializers.CharField(help_text="The key of the event's `data` aggregated; empty for count.")
    dimensions = serializers.ListField(child=serializers.CharField(), help_text="Further keys of `data` grouped by.")
    per_tier = serializers.BooleanField(help_text="Grouped by the hardware tier in `data.tier`.")
    built_in = serializers.BooleanField()
    active = serializers.BooleanField()


class MeterListView(TenantAPIView):
    """How usage events become billable quantities: every meter's definition (the same for every tenant)."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="meters_list", responses=MeterOutput(many=True))
    def get(self, request):
        return Response(MeterOutput(selectors.meter_list(), many=True).data)


# --- usage --------------------------------------------------------------------------------------

USAGE_MAX_SPAN = timedelta(days=400)
USAGE_DEFAULT_GROUP_BY = "day,deployment,meter,tier"
CSV_MEDIA_TYPE = "text/csv"
CSV_COLUMNS = ["period_start", "deployment_id", "deployment_name", "meter", "unit", "tier", "quantity", "events"]


def _start_of_month(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class UsageQueryInput(StrictSerializer):
    start = InstantField(required=False)
    end = InstantField(required=False, end_of_day=True)
    group_by = serializers.CharField(required=False, allow_blank=True)
    deployment = serializers.UUIDField(required=False)
    meter = serializers.SlugField(required=False)
    format = serializers.ChoiceField(choices=["json", "csv"], required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE)

    def validate_group_by(self, value: str) -> frozenset[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(selectors.GROUPS))
        if unknown:
            raise serializers.ValidationError(f"Unknown grouping {', '.join(unknown)}: choose from "
                                              f"{', '.join(selectors.GROUPS)}.")
        if {"hour", "day"} <= set(names):
            raise serializers.ValidationError("Group by hour or by day, not both.")
        return frozenset(names)

    def validate(self, data):
        end = data.get("end") or timezone.now()
        start = data.get("start") or _start_of_month(end - timedelta(microseconds=1))
        if end <= start:
            raise serializers.ValidationError({"end": f"Must be after start ({start.isoformat()})."})
        if end - start > USAGE_MAX_SPAN:
            raise serializers.ValidationError(
                {"end": f"The range is {(end - start).days} days; at most {USAGE_MAX_SPAN.days} days per request."})
        data["start"], data["end"] = start, end
        data.setdefault("group_by", frozenset(USAGE_DEFAULT_GROUP_BY.split(",")))
        return data


class UsageRowOutput(serializers.Serializer):
    period_start = serializers.DateTimeField(
        source="period", allow_null=True, default=None,
        help_text="Start of the hour or UTC day; null when not grouped by time.")
    deployment_id = serializers.UUIDField(source="deployment__public_id", allow_null=True, default=None,
                                          help_text="Null when not grouped by deployment.")
    deployment_name = serializers.CharField(source="deployment__name", allow_null=True, default=None)
    meter = serializers.CharField(source="meter__slug")
    unit = serializers.CharField(source="meter__unit")
    tier = serializers.SerializerMethodField(
        help_text="The hardware tier of a per-tier meter (accelerator_seconds); null for other meters or when "
                  "not grouped by tier.")
    quantity = serializers.SerializerMethodField(help_text="Exact decimal text, e.g. \"1250000\" or \"3600.5\".")
    events = serializers.IntegerField(help_text="How many usage events the quantity aggregates.")

    def get_tier(self, row) -> str | None:
        return row.get("tier") or None

    def get_quantity(self, row) -> str:
        return _decimal_text(row["quantity"])


class UsagePageOutput(serializers.Serializer):
    start = serializers.DateTimeField(help_text="The range used: an hour is counted when it begins in [start, end).")
    end = serializers.DateTimeField(help_text="Exclusive.")
    group_by = serializers.ListField(child=serializers.CharField(), help_text="What rows are grouped by (always meter).")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = UsageRowOutput(many=True)


USAGE_PARAMETERS = [
    OpenApiParameter("start", str, description="RFC 3339 time or date (UTC). Default: the start of this month."),
    OpenApiParameter("end", str, description="Exclusive RFC 3339 time, or a date whose whole day is included. "
                                             "Default: now. At most 400 days after start."),
    OpenApiParameter("group_by", str, description="Comma-separated: hour or day (UTC), deployment, meter, tier. "
                                                  f"Rows are always per meter. Default: {USAGE_DEFAULT_GROUP_BY}."),
    OpenApiParameter("deployment", OpenApiTypes.UUID, description="Only this deployment (deleted ones too)."),
    OpenApiParameter("meter", str, description="Only this meter (a slug, see /api/v1/meters)."),
    OpenApiParameter("format", str, enum=["json", "csv"],
                     description="csv: every row of the range as a CSV download (as Accept: text/csv)."),
    OpenApiParameter("cursor", str, description="From `next` or `previous` of a page."),
    OpenApiParameter("page_size", int, description=f"Rows per page, default {DEFAULT_PAGE_SIZE}, at most "
                                                   f"{MAX_PAGE_SIZE}."),
]


def _wants_csv(request, query: dict) -> bool:
    if "format" in query:
        return query["format"] == "csv"
    accepted = [part.split(";")[0].strip().lower() for part in request.META.get("HTTP_ACCEPT", "").split(",")]
    return CSV_MEDIA_TYPE in accepted


class _Line:
    """A file-like object whose write returns the text, for csv.writer into a streamed response."""

    def write(self, text: str) -> str:
        return text


def _csv_lines(rows):
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    # Deployment names are DNS labels and meter and tier names slugs: nothing a spreadsheet
    # would read as a formula.
    for row in rows.iterator(chunk_size=2000):
        yield writer.writerow([
            row["period"].isoformat() if row.get("period") else "", row.get("deployment__public_id") or "",
            row.get("deployment__name") or "", row["meter__slug"], row["meter__unit"], row.get("tier") or "",
            _decimal_text(row["quantity"]), row["events"],
        ])


class UsageView(TenantAPIView):
    """The tenant's usage from the hourly rollups, grouped and summed exactly.

    JSON pages with cursor pagination, or — with `Accept: text/csv` or `?format=csv` — every row
    of the range as one streamed CSV (the JSON rows' columns; empty cells for what is not
    grouped). This is the one API view answering anything but JSON: its errors stay JSON problems.
    """

    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        operation_id="usage_list", parameters=USAGE_PARAMETERS,
        responses={(200, "application/json"): UsagePageOutput,
                   (200, CSV_MEDIA_TYPE): OpenApiResponse(OpenApiTypes.STR, description=", ".join(CSV_COLUMNS)),
                   (400, PROBLEM_CONTENT_TYPE): Problem},
    )
    def get(self, request):
        params = request.query_params.dict()
        if "group_by" in request.query_params:  # ?group_by=day&group_by=meter as well as day,meter
            params["group_by"] = ",".join(request.query_params.getlist("group_by"))
        query = valid(UsageQueryInput, params)
        deployment = (selectors.usage_deployment(self.actor.tenant, query["deployment"])
                      if "deployment" in query else None)
        meter = None
        if "meter" in query:
            meter = selectors.meter_by_slug(query["meter"])
            if meter is None:
                raise serializers.ValidationError({"meter": f"No meter {query['meter']!r}: GET /api/v1/meters "
                                                            f"lists them."})
        rows = selectors.usage_rows(tenant=self.actor.tenant, start=query["start"], end=query["end"],
                                    group_by=query["group_by"], deployment=deployment, meter=meter)
        if _wants_csv(request, query):
            return self._csv(rows, query)
        return self._page(request, rows, query)

    def _page(self, request, rows, query: dict) -> Response:
        keys = selectors.usage_keys(query["group_by"])
        # What the rows are grouped by, meter always included: the echo, and the cursor's signature.
        signature = [name for name in selectors.GROUPS if name in query["group_by"] or name == "meter"]
        try:
            cursor = decode_cursor(query["cursor"], keys, signature) if "cursor" in query else None
        except CursorError:
            raise serializers.ValidationError(
                {"cursor": "Not a cursor of this query: follow `next` or `previous` of a page with the same "
                           "group_by."}) from None
        page = keyset_page(rows, keys, cursor=cursor, size=query.get("page_size", DEFAULT_PAGE_SIZE))

        def link(position):
            if position is None:
                return None
            params = request.query_params.copy()
            params["cursor"] = encode_cursor(position, signature)
            return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")

        return Response({
            "start": query["start"], "end": query["end"], "group_by": signature,
            "next": link(page.next), "previous": link(page.previous),
            "results": UsageRowOutput(page.rows, many=True).data,
        })

    def _csv(self, rows, query: dict) -> StreamingHttpResponse:
        response = StreamingHttpResponse(_csv_lines(rows), content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8")
        name = f"usage-{query['start']:%Y%m%dT%H%M}-{query['end']:%Y%m%dT%H%M}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


# --- a deployment's metrics ---------------------------------------------------------------------

METRICS_DEFAULT_WINDOW = timedelta(hours=1)
METRICS_DEFAULT_STEP = timedelta(minutes=1)
METRICS_MAX_SPAN = timedelta(days=31)
METRICS_MAX_POINTS = 1440
MINUTE = timedelta(minutes=1)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _ceil_minute(moment: datetime) -> datetime:
    floor = _floor_minute(moment)
    return floor if floor == moment else floor + MINUTE


class MetricsQueryInput(StrictSerializer):
    window = DurationField(required=False, help_text="How far back from `end`; default 1h.")
    start = InstantField(required=False)
    end = InstantField(required=False, end_of_day=True)
    step = DurationField(required=False)

    def validate_step(self, step: timedelta) -> timedelta:
        if step % MINUTE:
            raise serializers.ValidationError("Latency is kept per minute: use a whole number of minutes (1m, 5m, 1h).")
        return step

    def validate(self, data):
        if "window" in data and "start" in data:
            raise serializers.ValidationError({"window": "Give a window (and optionally its end), or start and end — "
                                                         "not both."})
        # Whole minutes, outward: latency rollups are per minute; the current minute is included.
        end = _ceil_minute(data.get("end") or timezone.now())
        start = _floor_minute(data["start"]) if "start" in data else end - data.get("window", METRICS_DEFAULT_WINDOW)
        step = data.get("step", METRICS_DEFAULT_STEP)
        if end <= start:
            raise serializers.ValidationError({"end": f"Must be after start ({start.isoformat()})."})
        if end - start > METRICS_MAX_SPAN:
            raise serializers.ValidationError({"window": f"At most {METRICS_MAX_SPAN.days} days per request."})
        points = step_count(start, end, step)
        if points > METRICS_MAX_POINTS:
            smallest = smallest_step_for(end - start, METRICS_MAX_POINTS)
            raise serializers.ValidationError(
                {"step": f"This window in steps of {int(step / MINUTE)}m is {points} points; at most "
                         f"{METRICS_MAX_POINTS}: use step={int(smallest / MINUTE)}m or more."})
        return {"start": start, "end": end, "step": step}


class PercentilesOutput(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class MetricsStepOutput(serializers.Serializer):
    time = serializers.DateTimeField(source="start", help_text="Start of the step.")
    requests = serializers.IntegerField(help_text="Requests finished in the step.")
    request_rate = serializers.FloatField(help_text="Requests per second over the step.")
    ttft_ms = PercentilesOutput(source="ttft", help_text="Time to first token; null without observations.")
    tpot_ms = PercentilesOutput(source="tpot", help_text="Time per output token.")
    e2e_ms = PercentilesOutput(source="e2e", help_text="End-to-end request latency.")
    within_slo = serializers.BooleanField(
        allow_null=True, help_text="p95 TTFT and p95 TPOT at most the SLO's; null when neither is known.")
    replicas = serializers.IntegerField(help_text="Replicas that held accelerators at any moment of the step.")


class AcceleratorHourOutput(serializers.Serializer):
    hour = serializers.DateTimeField()
    accelerator_seconds = serializers.DecimalField(max_digits=30, decimal_places=9)


class SloOutput(serializers.Serializer):
    ttft_p95_ms = serializers.FloatField(source="slo_ttft_p95_ms")
    tpot_p95_ms = serializers.FloatField(source="slo_tpot_p95_ms")


class MetricsTotalsOutput(serializers.Serializer):
    requests = serializers.IntegerField(source="summary.requests")
    request_rate = serializers.FloatField(source="summary.request_rate", help_text="Mean over the window.")
    ttft_ms = PercentilesOutput(source="summary.ttft", help_text="Over the whole window's merged histograms.")
    tpot_ms = PercentilesOutput(source="summary.tpot")
    e2e_ms = PercentilesOutput(source="summary.e2e")
    within_slo = serializers.BooleanField(source="summary.within_slo", allow_null=True)
    steps_with_traffic = serializers.IntegerField(source="summary.steps_with_traffic",
                                                  help_text="Steps with latency observations (judged on the SLO).")
    steps_within_slo = serializers.IntegerField(source="summary.steps_within_slo",
                                                help_text="Of those, the steps whose p95s met the SLO.")
    accelerator_seconds = serializers.DecimalField(
        source="capacity.accelerator_seconds", max_digits=30, decimal_places=9,
        help_text="Of the whole hours overlapping the window (usage rollups are hourly).")
    output_tokens = serializers.DecimalField(source="capacity.output_tokens", max_digits=30, decimal_places=9,
                                             help_text="Of the same hours.")
    accelerator_cost = serializers.DecimalField(
        source="capacity.accelerator_cost", max_digits=30, decimal_places=6, allow_null=True,
        help_text="Those accelerator-seconds at the tiers' list prices: an estimate, not an invoice amount.")
    currency = serializers.CharField(source="capacity.currency", allow_null=True)
    cost_per_million_output_tokens = serializers.DecimalField(
        source="capacity.cost_per_million_output_tokens", max_digits=30, decimal_places=6, allow_null=True)


class DeploymentRefOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField()


class DeploymentMetricsOutput(serializers.Serializer):
    deployment = DeploymentRefOutput()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    step_seconds = serializers.SerializerMethodField()
    slo = SloOutput(source="deployment")
    steps = MetricsStepOutput(many=True)
    accelerator_hours = AcceleratorHourOutput(many=True, help_text="Per hour: usage rollups' resolution.")
    totals = MetricsTotalsOutput(source="*")

    def get_step_seconds(self, metrics) -> int:
        return int(metrics.step.total_seconds())


class DeploymentMetricsView(TenantAPIView):
    """A deployment's request rate, latency percentiles against its SLO, and replicas, per step of a
    window; accelerator-seconds per hour; and totals over the window."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        operation_id="deployments_metrics_retrieve",
        responses={(200, "application/json"): DeploymentMetricsOutput, (400, PROBLEM_CONTENT_TYPE): Problem},
        parameters=[
            OpenApiParameter("window", str, description="How far back from `end`, e.g. 15m, 1h, 7d (default 1h, "
                                                        "at most 31d). Not with `start`."),
            OpenApiParameter("start", str, description="RFC 3339 time or date; rounded down to the minute."),
            OpenApiParameter("end", str, description="Default now; rounded up to the minute."),
            OpenApiParameter("step", str, description=f"Whole minutes, default 1m; at most {METRICS_MAX_POINTS} "
                                                      f"steps per window."),
        ])
    def get(self, request, deployment_id):
        deployment = self.get_owned(Deployment, deployment_id)
        query = valid(MetricsQueryInput, request.query_params.dict())
        metrics = selectors.deployment_metrics(deployment, start=query["start"], end=query["end"], step=query["step"])
        return Response(DeploymentMetricsOutput(metrics).data)


# ==============================================================================================
# Money: effective prices, credits, invoices and their drill-down. Scope `billing`; read-only —
# invoices change only through the back office's services, never through this API.
# ==============================================================================================



def _file_name(invoice) -> str:
    return invoice.number or f"draft-{invoice.period:%Y-%m}"


def _invoice_summary(invoice) -> dict:
    currency = invoice.currency
    return {"id": invoice.public_id, "number": invoice.number, "period": invoice.period, "status": invoice.status,
            "overdue": invoice.is_overdue(), "currency": currency,
            "subtotal": selectors.money_text(invoice.subtotal, currency),
            "credits_applied": selectors.money_text(invoice.credits_applied, currency),
            "tax": selectors.money_text(invoice.tax, currency), "total": selectors.money_text(invoice.total, currency),
            "due_date": invoice.due_date, "issued_at": invoice.issued_at}


def _with_links(request, document: dict) -> dict:
    base = request.build_absolute_uri(f"/api/v1/invoices/{document['id']}")
    for line in document["lines"]:
        line["rollups"] = f"{base}/rollups?line={line['id']}"
    return {**document, "pdf": f"{base}/pdf", "csv": f"{base}?format=csv"}


def _rollup_row(request, invoice, line, row: dict) -> dict:
    params = {"hour": row["hour"].strftime("%Y-%m-%dT%H:%M:%SZ")}
    if line is not None:
        params["line"] = str(line.public_id)
    events = request.build_absolute_uri(f"/api/v1/invoices/{invoice.public_id}/events?{urlencode(params)}")
    return {**row, "quantity": _decimal_text(row["quantity"]), "events": events}


class PriceTierOutput(serializers.Serializer):
    up_to = serializers.CharField(allow_null=True, help_text="Last unit of the tier (inclusive); null: no end.")
    unit_price = serializers.CharField()
    flat_fee = serializers.CharField()


class PriceOutput(serializers.Serializer):
    meter = serializers.CharField()
    hardware_tier = serializers.CharField(allow_null=True, help_text="null: every tier without a price of its own.")
    model = serializers.ChoiceField(choices=["per_unit", "graduated", "volume", "package"])
    unit_price = serializers.CharField(allow_null=True, help_text="Exact decimal text; per unit or per package.")
    tiers = PriceTierOutput(many=True)
    package_size = serializers.CharField(allow_null=True)
    free_units = serializers.CharField(help_text="Free allowance per month.")
    minimum = serializers.CharField(help_text="Floor of the monthly charge when any is due.")
    description = serializers.CharField()


class PricesOutput(serializers.Serializer):
    period = serializers.DateField(help_text="The month these prices bill (the current one).")
    book = serializers.CharField(allow_null=True, help_text="The effective book's name; null when none is set up.")
    currency = serializers.CharField()
    contract = serializers.BooleanField(help_text="Whether a contract of the tenant overrides the default prices.")
    discount_percent = serializers.CharField()
    minimum_commitment = serializers.CharField()
    prices = PriceOutput(many=True)


class PriceListView(TenantAPIView):
    """The tenant's effective prices this month: the default book of its currency with its contract's
    prices, discount and minimum commitment laid over it."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="prices_list", responses=PricesOutput)
    def get(self, request):
        return Response(PricesOutput(selectors.effective_prices(self.actor.tenant)).data)


class CreditBalanceOutput(serializers.Serializer):
    currency = serializers.CharField()
    balance = serializers.CharField(help_text="Σ of the ledger of every grant.")
    available = serializers.CharField(help_text="Of grants in force now (effective and not expired).")


class CreditGrantOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["prepaid", "promotional"])
    amount = serializers.CharField()
    balance = serializers.CharField()
    currency = serializers.CharField()
    effective_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    priority = serializers.IntegerField(help_text="0–100; lower is spent first, then the earliest expiry.")
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class CreditLedgerOutput(serializers.Serializer):
    grant = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["grant", "application", "expiry", "reversal"])
    amount = serializers.CharField(help_text="Signed: + adds to the balance, − takes from it.")
    currency = serializers.CharField()
    invoice = serializers.UUIDField(allow_null=True)
    invoice_number = serializers.CharField(allow_null=True)
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class CreditsOutput(serializers.Serializer):
    balances = CreditBalanceOutput(many=True)
    grants = CreditGrantOutput(many=True)
    ledger = CreditLedgerOutput(many=True, help_text="The most recent entries first (at most 500).")


class CreditsView(TenantAPIView):
    """Credit balances per currency, the grants, and their append-only ledger."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="credits_retrieve", responses=CreditsOutput)
    def get(self, request):
        return Response(CreditsOutput(selectors.credits_overview(self.actor.tenant)).data)


class InvoiceSummaryOutput(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField(allow_null=True, help_text="Assigned at finalization; null on a draft.")
    period = serializers.DateField(help_text="First day of the month (UTC) the invoice bills.")
    status = serializers.ChoiceField(choices=Invoice.Status.choices)
    overdue = serializers.BooleanField(help_text="Finalized, unpaid and past its due date.")
    currency = serializers.CharField()
    subtotal = serializers.CharField()
    credits_applied = serializers.CharField()
    tax = serializers.CharField()
    total = serializers.CharField()
    due_date = serializers.DateField(allow_null=True)
    issued_at = serializers.DateTimeField(allow_null=True)


class InvoiceLineOutput(serializers.Serializer):
    id = serializers.UUIDField()
    position = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["usage", "commitment_shortfall"])
    description = serializers.CharField()
    meter = serializers.CharField(allow_null=True)
    deployment_id = serializers.UUIDField(allow_null=True)
    deployment_name = serializers.CharField(allow_null=True, help_text="As it was when invoiced.")
    deployment_deleted = serializers.BooleanField()
    hardware_tier = serializers.CharField(allow_null=True)
    quantity = serializers.CharField()
    unit = serializers.CharField()
    unit_price = serializers.CharField(help_text="The price applied, in words.")
    amount = serializers.CharField()
    is_adjustment = serializers.BooleanField(help_text="Late usage of an earlier, already invoiced month.")
    period_of_usage = serializers.DateField(allow_null=True, help_text="The month an adjustment's usage belongs to.")
    rollups = serializers.URLField(help_text="The hourly rollups behind this line.")


class PartyOutput(serializers.Serializer):
    name = serializers.CharField()
    address = serializers.CharField(required=False)
    country = serializers.CharField()
    vat_id = serializers.CharField(required=False)


class InvoiceCreditOutput(serializers.Serializer):
    grant = serializers.UUIDField()
    kind = serializers.CharField()
    description = serializers.CharField()
    amount = serializers.CharField()


class InvoicePaymentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    amount = serializers.CharField()
    received_on = serializers.DateField()
    reference = serializers.CharField()


class CreditNoteLineOutput(serializers.Serializer):
    description = serializers.CharField()
    amount = serializers.CharField()


class CreditNoteOutput(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField()
    reason = serializers.CharField()
    issued_at = serializers.DateTimeField()
    subtotal = serializers.CharField()
    tax = serializers.CharField()
    amount = serializers.CharField()
    lines = CreditNoteLineOutput(many=True)


class InvoiceOutput(InvoiceSummaryOutput):
    issuer = PartyOutput()
    bill_to = PartyOutput()
    tax_rate = serializers.CharField(help_text="Percent.")
    tax_note = serializers.CharField(help_text="e.g. the reverse-charge statement; empty when none is needed.")
    amount_paid = serializers.CharField()
    amount_credited = serializers.CharField(help_text="Σ of its credit notes.")
    amount_due = serializers.CharField(help_text="total − credit notes − payments (0 on a draft or void invoice).")
    paid_at = serializers.DateTimeField(allow_null=True)
    voided_at = serializers.DateTimeField(allow_null=True)
    computed_at = serializers.DateTimeField(allow_null=True, help_text="When the lines were last computed.")
    lines = InvoiceLineOutput(many=True)
    credits = InvoiceCreditOutput(many=True)
    payments = InvoicePaymentOutput(many=True)
    credit_notes = CreditNoteOutput(many=True)
    pdf = serializers.URLField()
    csv = serializers.URLField()


class InvoiceListFilter(StrictSerializer):
    status = serializers.ChoiceField(choices=["draft", "finalized", "paid", "void", "overdue"], required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class InvoiceListView(TenantAPIView):
    """The tenant's invoices, newest month first (the current month's draft included)."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="invoices_list", responses=page_of(InvoiceSummaryOutput),
                   parameters=[OpenApiParameter("status", str, enum=["draft", "finalized", "paid", "void",
                                                                     "overdue"])])
    def get(self, request):
        query = valid(InvoiceListFilter, request.query_params.dict())
        invoices = selectors.invoice_list_for_tenant(self.actor.tenant, status=query.get("status"))
        paginator = PagePagination()
        page = paginator.paginate_queryset(invoices, request, view=self)
        return paginator.get_paginated_response(
            InvoiceSummaryOutput([_invoice_summary(invoice) for invoice in page], many=True).data)


class InvoiceDetailView(TenantAPIView):
    """One invoice: lines (each with a link to its hourly rollups), credits, tax, totals, payments,
    credit notes. `?format=csv` answers its lines as CSV instead."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(
        operation_id="invoices_retrieve",
        parameters=[OpenApiParameter("format", str, enum=["json", "csv"], description="csv: the lines as CSV.")],
        responses={(200, "application/json"): InvoiceOutput,
                   (200, CSV_MEDIA_TYPE): OpenApiResponse(OpenApiTypes.STR, description="The lines: "
                                                          + ", ".join(documents.CSV_COLUMNS)),
                   (404, PROBLEM_CONTENT_TYPE): Problem},
    )
    def get(self, request, invoice_id):
        invoice = self.get_owned(selectors.invoice_list_for_tenant(self.actor.tenant), invoice_id)
        document = documents.invoice_document(invoice)
        if request.query_params.get("format") == "csv":
            response = HttpResponse(documents.invoice_csv(document), content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{_file_name(invoice)}.csv"'
            return response
        return Response(InvoiceOutput(_with_links(request, document)).data)


class InvoicePdfView(TenantAPIView):
    """The invoice as a PDF (the same lines and totals as the JSON and the printable page)."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="invoices_pdf",
                   responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY),
                              (404, PROBLEM_CONTENT_TYPE): Problem})
    def get(self, request, invoice_id):
        invoice = self.get_owned(selectors.invoice_list_for_tenant(self.actor.tenant), invoice_id)
        response = HttpResponse(documents.invoice_pdf(documents.invoice_document(invoice)),
                                content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{_file_name(invoice)}.pdf"'
        return response


class DrillDownInput(StrictSerializer):
    line = serializers.UUIDField(required=False, help_text="One line of the invoice (its id).")
    hour = InstantField(required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE)


class RollupOutput(serializers.Serializer):
    hour = serializers.DateTimeField()
    meter = serializers.CharField(source="meter__slug")
    deployment_id = serializers.UUIDField(source="deployment__public_id")
    deployment_name = serializers.CharField(source="deployment__name")
    hardware_tier = serializers.CharField(source="tier")
    dimensions = serializers.DictField()
    quantity = serializers.CharField()
    event_count = serializers.IntegerField()
    events = serializers.URLField(help_text="The raw events of this hour behind it.")


class UsageEventOutput(serializers.Serializer):
    id = serializers.CharField(source="event_id", help_text="The CloudEvents id.")
    source = serializers.CharField()
    type = serializers.CharField()
    time = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    data = serializers.DictField()


def _drill_down_page(view: TenantAPIView, request, rows, keys: list[str], signature: list[str], query: dict):
    try:
        cursor = decode_cursor(query["cursor"], keys, signature) if "cursor" in query else None
    except CursorError:
        raise serializers.ValidationError({"cursor": "Not a cursor of this list: follow `next` or `previous`."}) \
            from None
    page = keyset_page(rows, keys, cursor=cursor, size=query.get("page_size", DEFAULT_PAGE_SIZE))

    def link(position):
        if position is None:
            return None
        params = request.query_params.copy()
        params["cursor"] = encode_cursor(position, signature)
        return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")

    return page, link(page.next), link(page.previous)


DRILL_DOWN_PARAMETERS = [
    OpenApiParameter("line", OpenApiTypes.UUID, description="Only this line of the invoice."),
    OpenApiParameter("cursor", str, description="From `next` or `previous` of the previous page."),
    OpenApiParameter("page_size", int, description=f"Rows per page, default {DEFAULT_PAGE_SIZE}, at most "
                                                   f"{MAX_PAGE_SIZE}."),
]


class InvoiceRollupListView(TenantAPIView):
    """Why this amount: the hourly rollups billed on the invoice (or on one line, `?line=`), each
    with a link to the raw events it sums. Cursor-paginated, oldest hour first."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="invoices_rollups", parameters=DRILL_DOWN_PARAMETERS,
                   responses={200: page_of(RollupOutput, cursor=True), (400, PROBLEM_CONTENT_TYPE): Problem,
                              (404, PROBLEM_CONTENT_TYPE): Problem})
    def get(self, request, invoice_id):
        invoice = self.get_owned(selectors.invoice_list_for_tenant(self.actor.tenant), invoice_id)
        query = valid(DrillDownInput, request.query_params.dict())
        line = selectors.invoice_line_for(invoice, query["line"]) if "line" in query else None
        rows = selectors.invoice_rollups(invoice, line).values(
            "id", "hour", "meter__slug", "deployment__public_id", "deployment__name", "tier", "dimensions",
            "quantity", "event_count", "deployment_id", "meter_id")
        page, next_url, previous_url = _drill_down_page(self, request, rows, ["hour", "id"], ["rollups"], query)
        results = [_rollup_row(request, invoice, line, row) for row in page.rows]
        return Response({"next": next_url, "previous": previous_url,
                         "results": RollupOutput(results, many=True).data})


class InvoiceEventListView(TenantAPIView):
    """The raw usage events behind the invoice, a line (`?line=`) or one hourly rollup of it
    (`?line=…&hour=…`). Raw events are kept for the retention period (13 months by default);
    rollups for ever. Cursor-paginated, oldest first."""

    required_scopes = {"GET": Scope.BILLING}

    @extend_schema(operation_id="invoices_events",
                   parameters=[*DRILL_DOWN_PARAMETERS,
                               OpenApiParameter("hour", OpenApiTypes.DATETIME, description="One hour (its start).")],
                   responses={200: page_of(UsageEventOutput, cursor=True), (400, PROBLEM_CONTENT_TYPE): Problem,
                              (404, PROBLEM_CONTENT_TYPE): Problem})
    def get(self, request, invoice_id):
        invoice = self.get_owned(selectors.invoice_list_for_tenant(self.actor.tenant), invoice_id)
        query = valid(DrillDownInput, request.query_params.dict())
        line = selectors.invoice_line_for(invoice, query["line"]) if "line" in query else None
        rows = selectors.invoice_events(invoice, line, query.get("hour")).values(
            "id", "event_id", "source", "type", "time", "received_at", "data")
        page, next_url, previous_url = _drill_down_page(self, request, rows, ["time", "id"], ["events"], query)
        return Response({"next": next_url, "previous": previous_url,
                         "results": UsageEventOutput(page.rows, many=True).data})


# ==============================================================================================
# Budgets (billing scope): /api/v1/budgets — a monthly spend limit for the tenant or one
# deployment, alerts at thresholds, an action at 100 % and its lift (docs/billing.md, "Budgets").
# ==============================================================================================

BUDGET_THRESHOLDS_HELP = ("Percents of the amount that alert (email and `budget.threshold_reached` webhook), once "
                          "each per month: whole numbers 1–1000, increasing. Default [50, 80, 100].")
BUDGET_ACTION_HELP = ("At 100 %: `notify` only; `scale_to_minimum` caps every covered deployment's replicas at its "
                      "min_replicas; `pause` pauses them. Lifted by `POST …/lift` or when the month ends.")


class BudgetDeploymentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class BudgetAlertOutput(serializers.Serializer):
    threshold = serializers.IntegerField(help_text="Percent of the amount.")
    reached_at = serializers.DateTimeField()
    spend = serializers.CharField(help_text="Month-to-date spend then.")
    forecast = serializers.CharField(help_text="The month's forecast then.")


class BudgetActionDeploymentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    previous_status = serializers.CharField(help_text="Its status before the action.")
    previous_replica_cap = serializers.IntegerField(allow_null=True, help_text="Its budget replica cap before.")
    min_replicas = serializers.IntegerField()
    max_replicas = serializers.IntegerField()
    applied = serializers.BooleanField(help_text="false: the action left it as it was (e.g. already paused by you).")
    note = serializers.CharField()
    lift = serializers.CharField(allow_blank=True, help_text="What the lift did to it; empty while in force.")


class BudgetActionOutput(serializers.Serializer):
    action = serializers.CharField(help_text="What was done: scale_to_minimum or pause.")
    period = serializers.DateField()
    in_force = serializers.BooleanField()
    applied_at = serializers.DateTimeField()
    spend = serializers.CharField(help_text="Month-to-date spend when it was applied.")
    lifted_at = serializers.DateTimeField(allow_null=True)
    lifted_by = serializers.CharField(allow_null=True, help_text="Who lifted it; null: the month ended (or not yet).")
    lift_reason = serializers.CharField(allow_blank=True)
    deployments = BudgetActionDeploymentOutput(many=True)


class BudgetOutput(serializers.Serializer):
    id = serializers.UUIDField()
    deployment = BudgetDeploymentOutput(allow_null=True, help_text="null: the whole tenant.")
    amount = serializers.CharField(help_text="Per calendar month (UTC), before credits and tax.")
    currency = serializers.CharField()
    thresholds = serializers.ListField(child=serializers.IntegerField(), help_text=BUDGET_THRESHOLDS_HELP)
    action = serializers.ChoiceField(choices=Budget.Action.values, help_text=BUDGET_ACTION_HELP)
    active = serializers.BooleanField()
    period = serializers.DateField(help_text="The month shown (its first day).")
    spend = serializers.CharField(allow_null=True, help_text="Month-to-date spend; null when it cannot be computed.")
    forecast = serializers.CharField(allow_null=True,
                                     help_text="Spend so far × month length ÷ time elapsed (at least one hour).")
    percent_used = serializers.CharField(allow_null=True, help_text="spend ÷ amount, in percent (two decimals).")
    spend_problem = serializers.CharField(allow_blank=True,
                                          help_text="Why spend cannot be computed; empty when it can.")
    alerts = BudgetAlertOutput(many=True, help_text="Thresholds reached this month.")
    action_state = BudgetActionOutput(allow_null=True, help_text="This month's action, or one still in force.")
    lift_suggested = serializers.BooleanField(help_text="An action is in force but spend is below the amount "
                                                        "(e.g. the amount was raised): lift it to scale again.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _money(value, currency: str) -> str | None:
    return None if value is None else selectors.money_text(value, currency)


def _budget_action_payload(action, currency: str) -> dict | None:
    if action is None:
        return None
    return {"action": action.action, "period": action.period, "in_force": action.in_force,
            "applied_at": action.applied_at, "spend": _money(action.spend, currency), "lifted_at": action.lifted_at,
            "lifted_by": action.lifted_by.email if action.lifted_by_id else None, "lift_reason": action.lift_reason,
            "deployments": [{"id": entry["public_id"], "name": entry["name"], "previous_status": entry["status"],
                             "previous_replica_cap": entry["budget_replica_cap"],
                             "min_replicas": entry["min_replicas"], "max_replicas": entry["max_replicas"],
                             "applied": entry["applied"], "note": entry["note"], "lift": entry.get("lift", "")}
                            for entry in action.deployments]}


def budget_payload(overview: selectors.BudgetOverview) -> dict:
    budget, currency = overview.budget, overview.budget.currency
    return {
        "id": budget.public_id,
        "deployment": ({"id": budget.deployment.public_id, "name": budget.deployment.name}
                       if budget.deployment_id else None),
        "amount": _money(budget.amount, currency), "currency": currency, "thresholds": budget.thresholds,
        "action": budget.action, "active": budget.active, "period": overview.period,
        "spend": _money(overview.spend, currency), "forecast": _money(overview.forecast, currency),
        "percent_used": None if overview.percent_used is None else f"{overview.percent_used:f}",
        "spend_problem": overview.problem,
        "alerts": [{"threshold": alert.threshold, "reached_at": alert.reached_at,
                    "spend": _money(alert.spend, currency), "forecast": _money(alert.forecast, currency)}
                   for alert in overview.alerts],
        "action_state": _budget_action_payload(overview.action, currency),
        "lift_suggested": overview.lift_suggested,
        "created_at": budget.created_at, "updated_at": budget.updated_at,
    }


def _budget_response(budget: Budget, status: int = 200) -> Response:
    [overview] = selectors.budget_overviews([budget])
    return Response(BudgetOutput(budget_payload(overview)).data, status=status)


class BudgetCreateInput(StrictSerializer):
    deployment = serializers.CharField(required=False, allow_null=True,
                                       help_text="A deployment's id: the budget covers it alone. Omitted or null: "
                                                 "the whole tenant (one of each at most).")
    amount = serializers.DecimalField(max_digits=20, decimal_places=4,
                                      help_text='Per month, > 0, in the currency\'s minor units, e.g. "500.00".')
    currency = serializers.CharField(required=False, max_length=3,
                                     help_text="The tenant's billing currency (the default); another is refused.")
    thresholds = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=50,
                                       help_text=BUDGET_THRESHOLDS_HELP)
    action = serializers.ChoiceField(choices=Budget.Action.values, required=False, default=Budget.Action.NOTIFY,
                                     help_text=BUDGET_ACTION_HELP)
    active = serializers.BooleanField(required=False, default=True)


class BudgetUpdateInput(StrictSerializer):
    amount = serializers.DecimalField(max_digits=20, decimal_places=4, required=False)
    currency = serializers.CharField(required=False, max_length=3)
    thresholds = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=50,
                                       help_text=BUDGET_THRESHOLDS_HELP)
    action = serializers.ChoiceField(choices=Budget.Action.values, required=False, help_text=BUDGET_ACTION_HELP)
    active = serializers.BooleanField(required=False)


class BudgetLiftInput(StrictSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                   help_text="Kept in the audit log and on the action.")


class BudgetListView(TenantAPIView):
    """The tenant's budgets, each with this month's spend, forecast, alerts and action."""

    required_scopes = {"GET": Scope.BILLING, "POST": Scope.BILLING}

    @extend_schema(operation_id="budgets_list", responses=page_of(BudgetOutput))
    def get(self, request):
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.budget_list_for_tenant(self.actor.tenant), request, view=self)
        payloads = [budget_payload(overview) for overview in selectors.budget_overviews(page)]
        return paginator.get_paginated_response(BudgetOutput(payloads, many=True).data)

    @extend_schema(operation_id="budgets_create", request=BudgetCreateInput, responses={201: BudgetOutput},
                   description="A monthly budget for the whole tenant (no `deployment`) or one deployment. An "
                               "unknown deployment — or another tenant's — is 404; a second budget for the same "
                               "scope is 409.")
    def post(self, request):
        data = valid(BudgetCreateInput, request.data)
        deployment_id = data.pop("deployment", None)
        deployment = self.get_owned(Deployment, deployment_id) if deployment_id else None
        budget = budgets.budget_create(actor=self.actor, deployment=deployment, **data)
        return _budget_response(budget, status=201)


class BudgetView(TenantAPIView):
    """Fetches the budget named in the URL through the tenant, for every budget route."""

    def _budget(self, budget_id) -> Budget:
        return selectors.budget_for(self.actor.tenant, budget_id)


class BudgetDetailView(BudgetView):
    required_scopes = {"GET": Scope.BILLING, "PATCH": Scope.BILLING, "DELETE": Scope.BILLING}

    @extend_schema(operation_id="budgets_retrieve", responses=BudgetOutput)
    def get(self, request, budget_id):
        return _budget_response(self._budget(budget_id))

    @extend_schema(operation_id="budgets_update", request=BudgetUpdateInput, responses=BudgetOutput,
                   description="Changes the amount, thresholds, action or active flag (the scope is fixed). When "
                               "an action is in force and the new amount is above spend, `lift_suggested` is true.")
    def patch(self, request, budget_id):
        budget = self._budget(budget_id)
        budget = budgets.budget_update(actor=self.actor, budget=budget, **valid(BudgetUpdateInput, request.data))
        return _budget_response(budget)

    @extend_schema(operation_id="budgets_destroy", responses={204: None},
                   description="Deletes the budget; an action of it in force is lifted first.")
    def delete(self, request, budget_id):
        budgets.budget_delete(actor=self.actor, budget=self._budget(budget_id))
        return Response(status=204)


class BudgetLiftView(BudgetView):
    required_scopes = {"POST": Scope.BILLING}

    @extend_schema(operation_id="budgets_lift", request=BudgetLiftInput, responses=BudgetOutput,
                   description="Lifts the action in force: replica caps go back to what they were, deployments the "
                               "budget paused resume (not those you had paused yourself). 409 when nothing is in "
                               "force. The budget acts again only next month.")
    def post(self, request, budget_id):
        budget = self._budget(budget_id)
        data = valid(BudgetLiftInput, request.data)
        budgets.budget_lift(actor=self.actor, budget=budget, reason=data.get("reason", ""))
        return _budget_response(budget)


# --- billing profile ----------------------------------------------------------------------------

COUNTRY_HELP = ("ISO 3166-1 alpha-2 code of the country invoices are addressed to (the tenant's billing country); "
                "it decides the VAT rate.")
VAT_ID_HELP = ("With its country prefix, e.g. DE136695976. For an EU country it must be a valid VAT id of that "
               "country (format and check digits, python-stdnum): only then does a business get the reverse charge. "
               "Stored compact (no spaces). Outside the EU it is printed as given.")


class TaxPreviewOutput(serializers.Serializer):
    rate_percent = serializers.CharField(help_text="The VAT rate an invoice would carry now, in percent.")
    scheme = serializers.ChoiceField(choices=["domestic", "reverse_charge", "eu_destination", "outside_eu_business",
                                              "outside_eu_consumer"])
    reverse_charge = serializers.BooleanField()
    note = serializers.CharField(allow_blank=True, help_text="Printed on the invoice; empty when none is needed.")
    reason = serializers.CharField(help_text="Why this rate.")


class BillingProfileOutput(serializers.Serializer):
    legal_name = serializers.CharField(allow_blank=True, help_text="Empty: the tenant's name is printed.")
    address = serializers.CharField(allow_blank=True)
    country = serializers.CharField(help_text=COUNTRY_HELP)
    vat_id = serializers.CharField(allow_blank=True, help_text=VAT_ID_HELP)
    is_business = serializers.BooleanField(help_text="A business (B2B) rather than a consumer.")
    invoice_email = serializers.CharField(allow_blank=True, help_text="Where invoices are sent; empty: the owners.")
    tax = TaxPreviewOutput(allow_null=True, help_text="The tax that applies with this profile now (billing.tax); "
                                                      "null only when it cannot be decided (see tax_problem).")
    tax_problem = serializers.CharField(allow_blank=True, help_text="Why the tax cannot be decided; empty when it can.")
    updated_at = serializers.DateTimeField(allow_null=True, help_text="null: never changed (the defaults apply).")


class BillingProfileUpdateInput(StrictSerializer):
    legal_name = serializers.CharField(required=False, allow_blank=True,
                                       help_text=f"At most {profiles.LEGAL_NAME_MAX_LENGTH} characters; empty: the "
                                                 f"tenant's name.")
    address = serializers.CharField(required=False, allow_blank=True,
                                    help_text=f"Postal address, at most {profiles.ADDRESS_MAX_LENGTH} characters.")
    country = serializers.CharField(required=False, allow_blank=True, help_text=COUNTRY_HELP)
    vat_id = serializers.CharField(required=False, allow_blank=True, help_text=VAT_ID_HELP)
    is_business = serializers.BooleanField(required=False)
    invoice_email = serializers.CharField(required=False, allow_blank=True,
                                          help_text="A valid email address, or empty for the owners.")


def billing_profile_payload(details: profiles.BillingDetails) -> dict:
    tax = details.tax
    return {
        "legal_name": details.legal_name, "address": details.address, "country": details.country,
        "vat_id": details.vat_id, "is_business": details.is_business, "invoice_email": details.invoice_email,
        "tax": None if tax is None else {"rate_percent": details.tax_rate_text, "scheme": tax.scheme,
                                         "reverse_charge": tax.reverse_charge, "note": tax.invoice_note,
                                         "reason": tax.reason},
        "tax_problem": details.tax_problem, "updated_at": details.updated_at,
    }


class BillingProfileView(TenantAPIView):
    """Who the tenant's invoices are addressed to and what decides their tax, with the tax that
    applies now."""

    required_scopes = {"GET": Scope.BILLING, "PATCH": Scope.BILLING}

    @extend_schema(operation_id="billing_profile_retrieve", responses=BillingProfileOutput)
    def get(self, request):
        return Response(BillingProfileOutput(billing_profile_payload(
            profiles.billing_profile_for(self.actor.tenant))).data)

    @extend_schema(operation_id="billing_profile_update", request=BillingProfileUpdateInput,
                   responses=BillingProfileOutput,
                   description="Changes the fields given. A bad value is a 400 naming the field and changes "
                               "nothing. The current month's draft invoice is recomputed at once (its bill-to and "
                               "tax follow); finalized invoices keep what they were issued with.")
    def patch(self, request):
        details = profiles.billing_profile_update(actor=self.actor, **valid(BillingProfileUpdateInput, request.data))
        return Response(BillingProfileOutput(billing_profile_payload(details)).data)

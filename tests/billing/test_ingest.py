"""POST /api/v1/usage/events and billing.services.usage_ingest: every event counted once,
duplicates and bad events reported with their index, late events billed as adjustments, token
usage from one source per deployment, and rollups that always equal the raw events. Runs on
SQLite and on PostgreSQL (the COPY path)."""

import gzip
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Count, DecimalField, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone

from billing.metering import SCRAPE_COLLECTOR_SOURCE, MeterSpec, ValidEvent, aggregate, month_of
from billing.models import ClosedPeriod, Meter, UsageEvent, UsageRollup
from billing.services import meter_specs, usage_event_purge, usage_ingest
from scheduler.models import Deployment
from tests.conftest import api_client
from tests.cross_tenant_objects import make_deployment
from tenants.services import service_token_create

URL = "/api/v1/usage/events"
GATEWAY = "gateway/eu-north1"


@pytest.fixture
def fleet(db):
    _token, plaintext = service_token_create(name="gateway", scopes=["usage:write"])
    return api_client(plaintext)


@pytest.fixture
def external(tenant_a) -> Deployment:
    """A deployment whose token usage comes from the tenant's own stack, through this endpoint."""
    return make_deployment(tenant_a, name="external", token_usage_source="external")


@pytest.fixture
def scraped(tenant_b) -> Deployment:
    return make_deployment(tenant_b, name="scraped")


def request_event(deployment, event_id, *, source=GATEWAY, time=None, **data) -> dict:
    time = time or timezone.now() - timedelta(minutes=1)
    return {"specversion": "1.0", "id": event_id, "source": source, "type": "inference.request",
            "subject": str(deployment.public_id), "time": time.isoformat().replace("+00:00", "Z"),
            "data": {"input_tokens": 100, "output_tokens": 10, **data}}


def accelerator_event(deployment, event_id, *, seconds=60.0, tier="h100-80gb-on-demand", time=None) -> dict:
    time = time or timezone.now() - timedelta(minutes=2)
    return {"specversion": "1.0", "id": event_id, "source": "switchyard/collector/accelerators",
            "type": "accelerator.usage", "subject": str(deployment.public_id), "time": time.isoformat(),
            "data": {"tier": tier, "accelerators": 1, "seconds": seconds, "accelerator_seconds": seconds,
                     "replica": "r-1"}}


def post(client, events, **extra):
    return client.generic("POST", URL, json.dumps({"events": events}), content_type="application/json", **extra)


def ingest(client, events) -> dict:
    response = post(client, events)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == len(events)
    assert answer["duplicates"] == len(answer["duplicate_events"])
    assert answer["rejected"] == len(answer["rejections"])
    return answer


def rollup(deployment, meter: str) -> Decimal:
    return UsageRollup.objects.filter(deployment=deployment, meter__slug=meter).aggregate(
        total=Sum("quantity"))["total"] or Decimal(0)


def raw_totals() -> dict:
    """Σ of each built-in meter's property over the raw events, per rollup key, summed by the database."""
    totals = {}
    for meter in Meter.objects.filter(built_in=True):
        events = UsageEvent.objects.filter(type=meter.event_type, data__has_key=meter.value_property)
        rows = (events.annotate(hour=TruncHour("time"), tier=KT("data__tier") if meter.per_tier else Value(""),
                                value=Cast(KT(f"data__{meter.value_property}"),
                                           DecimalField(max_digits=30, decimal_places=9)))
                .values("deployment_id", "hour", "billing_period", "tier")
                .annotate(total=Sum("value"), events=Count("id")))
        for row in rows:
            key = (row["deployment_id"], meter.slug, row["tier"] or "", row["hour"], row["billing_period"])
            totals[key] = (Decimal(row["total"]).quantize(Decimal("1e-9")), row["events"])
    return totals


def rollup_totals() -> dict:
    return {(r.deployment_id, r.meter.slug, r.tier, r.hour, r.billing_period): (r.quantity, r.event_count)
            for r in UsageRollup.objects.select_related("meter").filter(meter__built_in=True)}


# --- accepted, duplicates, rejected -------------------------------------------------------------


def test_a_batch_is_stored_once_and_rolled_up(fleet, external):
    events = [request_event(external, f"req-{n}", input_tokens=100 + n, output_tokens=10) for n in range(5)]
    events[4]["data"]["requests"] = 3
    answer = ingest(fleet, events)
    assert answer == {"accepted": 5, "duplicates": 0, "rejected": 0, "duplicate_events": [], "rejections": []}
    assert UsageEvent.objects.filter(deployment=external, tenant=external.tenant).count() == 5
    assert rollup(external, "input_tokens") == 510
    assert rollup(external, "output_tokens") == 50
    assert rollup(external, "requests") == 7  # one each, unless the event says more
    stored = UsageEvent.objects.get(event_id="req-0")
    assert stored.source == GATEWAY and stored.data["requests"] == 1
    assert stored.billing_period == month_of(stored.time)


@pytest.mark.parametrize("text, stored", [
    ("{hour}:59:59.999999Z", ("59:59.999999", 0)),  # stored from the text as sent
    ("{hour}:59:59.9999999Z", ("59:59.999999", 0)),  # more than microseconds: truncated, not rounded
    ("{hour}:59:59.5+02:00", ("59:59.500000", -2)),  # an offset: the same instant
    ("{hour}:59:59.1234567-05:30", ("59:59.123456", 5.5)),
])
def test_times_are_stored_as_the_instant_validated_and_rolled_up_in_its_hour(fleet, external, text, stored):
    """The COPY takes a time's text as sent when PostgreSQL reads it as the instant Python
    parsed; any other is reformatted — either way the stored time and the rollup's hour agree."""
    local = (timezone.now() - timedelta(hours=8)).replace(minute=0, second=0, microsecond=0)
    event = request_event(external, "req-t")
    event["time"] = text.format(hour=f"{local:%Y-%m-%dT%H}")
    assert ingest(fleet, [event])["accepted"] == 1
    minute_second, offset_hours = stored
    expected = datetime.fromisoformat(f"{local:%Y-%m-%dT%H}:{minute_second}").replace(tzinfo=UTC) \
        + timedelta(hours=offset_hours)
    assert UsageEvent.objects.get(event_id="req-t").time == expected
    row = UsageRollup.objects.get(deployment=external, meter__slug="input_tokens")
    assert row.hour == expected.replace(minute=0, second=0, microsecond=0)


def test_repeats_in_one_batch_and_across_batches_are_duplicates(fleet, external):
    first = ingest(fleet, [request_event(external, "a"), request_event(external, "b"), request_event(external, "a"),
                           request_event(external, "a", source="gateway/us-east1")])
    assert first["accepted"] == 3
    assert first["duplicate_events"] == [{"index": 2, "id": "a"}]
    second = ingest(fleet, [request_event(external, "c"), request_event(external, "b", input_tokens=9999),
                            request_event(external, "a")])
    assert second["accepted"] == 1
    assert second["duplicate_events"] == [{"index": 1, "id": "b"}, {"index": 2, "id": "a"}]
    assert UsageEvent.objects.count() == 4
    assert rollup(external, "input_tokens") == 400  # the repeat's different data counted nowhere


BAD_EVENTS = [
    (lambda d: "not an event", None, "must be a JSON object"),
    (lambda d: {**request_event(d, "x1"), "specversion": "0.3"}, "x1", 'specversion must be "1.0"'),
    (lambda d: {k: v for k, v in request_event(d, "x2").items() if k != "source"}, "x2", "source must be"),
    (lambda d: {**request_event(d, "x3"), "type": "inference.reqest"}, "x3", "type 'inference.reqest' is unknown"),
    (lambda d: {**request_event(d, "x4"), "subject": str(uuid.uuid4())}, "x4", "unknown deployment"),
    (lambda d: {**request_event(d, "x5"), "subject": "chat"}, "x5", "unknown deployment 'chat'"),
    (lambda d: {**request_event(d, "x6"), "time": "2026-12-01 10:00"}, "x6", "not RFC 3339 with an offset"),
    (lambda d: request_event(d, "x7", time=timezone.now() + timedelta(minutes=6)), "x7", "in the future"),
    (lambda d: request_event(d, "x8", time=timezone.now() - timedelta(days=36)), "x8", "older than the 35 days"),
    (lambda d: {**request_event(d, "x9"), "data": "812 tokens"}, "x9", "data must be a JSON object"),
    (lambda d: request_event(d, "x10", input_tokens=-5), "x10", "data.input_tokens must not be negative"),
    (lambda d: request_event(d, "x11", output_tokens="many"), "x11", "data.output_tokens must be a whole number"),
    (lambda d: request_event(d, "x12", output_tokens=1.5), "x12", "data.output_tokens must be a whole number"),
    (lambda d: {**request_event(d, "x13"), "id": ""}, None, "id must be a non-empty string"),
    (lambda d: {**accelerator_event(d, "x14"), "data": {"accelerator_seconds": 60}}, "x14", "data.tier is missing"),
]


@pytest.mark.parametrize("make, event_id, reason", BAD_EVENTS, ids=[b[2] for b in BAD_EVENTS])
def test_a_bad_event_is_rejected_with_its_index_and_reason_and_the_rest_accepted(fleet, external, make, event_id,
                                                                                 reason):
    answer = ingest(fleet, [request_event(external, "good-1"), make(external), request_event(external, "good-2")])
    assert answer["accepted"] == 2
    (rejection,) = answer["rejections"]
    assert rejection["index"] == 1 and rejection["id"] == event_id
    assert reason in rejection["reason"], rejection["reason"]
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"good-1", "good-2"}


def test_token_events_from_a_source_that_is_not_the_deployments_are_rejected(fleet, external, scraped):
    answer = ingest(fleet, [
        request_event(scraped, "gw-on-scraped"),  # the replicas' metrics count this deployment's tokens
        request_event(external, "scrape-on-external", source=SCRAPE_COLLECTOR_SOURCE),
        request_event(scraped, "scrape-on-scraped", source=SCRAPE_COLLECTOR_SOURCE),
        request_event(external, "gw-on-external"),
        accelerator_event(scraped, "seconds-on-scraped"),  # not tokens: any source
    ])
    assert answer["accepted"] == 3
    reasons = {r["id"]: r["reason"] for r in answer["rejections"]}
    assert "token_usage_source scrape" in reasons["gw-on-scraped"]
    assert "no token is billed twice" in reasons["gw-on-scraped"]
    assert "token_usage_source external" in reasons["scrape-on-external"]


def test_a_deleted_deployment_is_still_metered(fleet, external):
    Deployment.all_objects.filter(pk=external.pk).update(status="deleted", deleted_at=timezone.now())
    assert ingest(fleet, [request_event(external, "after-delete")])["accepted"] == 1
    assert rollup(external, "input_tokens") == 100


def test_a_late_event_after_its_month_closed_is_billed_in_the_open_month(fleet, external, scraped):
    now = timezone.now()
    last_month_end = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(hours=1)  # ≤ 32 days ago
    last_month, this_month = month_of(last_month_end), month_of(now)
    ClosedPeriod.objects.create(tenant=external.tenant, period=last_month)
    answer = ingest(fleet, [request_event(external, "late", time=last_month_end),
                            accelerator_event(scraped, "not-closed", time=last_month_end)])
    assert answer["accepted"] == 2
    late = UsageEvent.objects.get(event_id="late")
    assert late.time == last_month_end and late.billing_period == this_month  # an adjustment, on the open month
    assert UsageEvent.objects.get(event_id="not-closed").billing_period == last_month  # another tenant: still open
    (row,) = UsageRollup.objects.filter(deployment=external, meter__slug="input_tokens")
    assert (row.hour, row.billing_period) == (last_month_end, this_month)


def test_rollups_equal_raw_totals_after_mixed_batches(fleet, external, scraped):
    base = timezone.now().replace(minute=0, second=0, microsecond=0)
    batches = [
        [request_event(external, f"m{n}", time=base - timedelta(minutes=7 * n), input_tokens=n * 13 % 997,
                       output_tokens=n % 50) for n in range(40)],
        [accelerator_event(scraped, f"s{n}", seconds=[60.0, 37.5, 0.25][n % 3], time=base - timedelta(minutes=n),
                           tier=["h100-80gb-on-demand", "l40s-48gb-spot"][n % 2]) for n in range(30)],
        [request_event(external, f"m{n}") for n in range(30, 50)]
        + [accelerator_event(scraped, f"s{n}", seconds=12.125, time=base - timedelta(minutes=n)) for n in range(25, 35)]
        + [request_event(external, "bad", input_tokens=-1)],
    ]
    answers = [ingest(fleet, batch) for batch in batches]
    assert sum(a["accepted"] for a in answers) == 40 + 30 + 10 + 5
    assert UsageEvent.objects.count() == 85
    assert rollup_totals() == raw_totals()


# --- the batch as a whole -----------------------------------------------------------------------


def test_a_gzip_body_is_accepted(fleet, external):
    body = gzip.compress(json.dumps({"events": [request_event(external, "zipped")]}).encode())
    response = fleet.generic("POST", URL, body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1


def test_a_gzip_body_of_several_members_is_read_whole(fleet, external):
    body = json.dumps({"events": [request_event(external, "one"), request_event(external, "two")]}).encode()
    members = gzip.compress(body[:40]) + gzip.compress(body[40:])
    response = fleet.generic("POST", URL, members, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202 and response.json()["accepted"] == 2


def test_unusual_characters_are_stored_as_sent(fleet, external):
    """Tabs, newlines and backslashes are COPY's control characters: they must survive it."""
    event = request_event(external, "id\twith\\odd\nchars\r", source="gateway\\eu\t1",
                          note='a "quoted" \\ back\tslash\nand ünïcödé ✓')
    assert ingest(fleet, [event])["accepted"] == 1
    stored = UsageEvent.objects.get()
    assert (stored.event_id, stored.source, stored.data["note"]) == (event["id"], event["source"],
                                                                     event["data"]["note"])
    assert ingest(fleet, [event])["duplicates"] == 1


def test_a_gzip_bomb_is_refused_before_it_fills_the_memory(fleet, external, settings):
    bomb = gzip.compress(b'{"events": [' + b" " * (settings.API_MAX_BODY_BYTES + 10) + b"]}")
    assert len(bomb) < 10_000
    response = fleet.generic("POST", URL, bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert "decompresses to more than" in response.json()["detail"]


@pytest.mark.parametrize("body, encoding, status, detail", [
    (b"not gzip at all", "gzip", 400, "not valid gzip"),
    (gzip.compress(b'{"events": []}')[:-6], "gzip", 400, "truncated"),
    (b'{"events": []}', "br", 415, "Content-Encoding 'br' is not supported"),
])
def test_a_bad_encoding_is_refused(fleet, body, encoding, status, detail):
    response = fleet.generic("POST", URL, body, content_type="application/json", HTTP_CONTENT_ENCODING=encoding)
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert detail in response.json()["detail"]


def test_a_batch_over_the_limit_is_refused_whole(fleet, external, settings):
    events = [request_event(external, f"e{n}") for n in range(settings.USAGE_MAX_BATCH + 1)]
    response = post(fleet, events)
    assert response.status_code == 413
    assert f"at most {settings.USAGE_MAX_BATCH} events" in response.json()["detail"]
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize("body, detail", [
    (b"{not json", "not valid JSON"),
    (b"[]", "must be a batch"),
    (b'{"event": []}', "must be a batch"),
    (b'{"events": {"id": 1}}', "must be a batch"),
    (b'{"events": [], "tenant": "acme"}', "Unknown field tenant"),
])
def test_a_body_that_is_not_a_batch_is_400_and_stores_nothing(fleet, body, detail):
    response = fleet.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert not UsageEvent.objects.exists()


def test_a_body_that_is_not_json_is_415(fleet):
    response = fleet.generic("POST", URL, b"events=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_an_empty_batch_is_fine(fleet):
    assert ingest(fleet, [])["accepted"] == 0


# --- who may report usage -----------------------------------------------------------------------


def test_a_tenant_key_is_refused_whatever_its_scopes(tenant_a, external):
    response = post(tenant_a.api, [request_event(external, "self-reported")])
    assert response.status_code == 403
    assert "fleet is the operator's" in response.json()["detail"]
    assert not UsageEvent.objects.exists()


def test_a_service_token_without_usage_write_is_refused(db, external):
    _token, plaintext = service_token_create(name="fleet only", scopes=["fleet"])
    response = post(api_client(plaintext), [request_event(external, "x")])
    assert response.status_code == 403 and "'usage:write' scope" in response.json()["detail"]


def test_no_credential_is_401(db):
    assert post(api_client(), []).status_code == 401


# --- the service ----------------------------------------------------------------------------------


def test_an_event_id_is_not_used_up_by_a_write_that_rolled_back(external):
    events = [request_event(external, f"r{n}") for n in range(3)]
    with pytest.raises(RuntimeError), transaction.atomic():
        assert usage_ingest(events).accepted == 3
        raise RuntimeError("the caller's transaction failed after the ingest")
    assert not UsageEvent.objects.exists() and not UsageRollup.objects.exists()
    assert usage_ingest([request_event(external, f"r{n}") for n in range(3)]).accepted == 3
    assert rollup(external, "input_tokens") == 300


def test_every_aggregation_of_custom_meters_equals_its_raw_events(external):
    Meter.objects.bulk_create([
        Meter(slug="max_ttft", name="Max TTFT", unit="ms", event_type="inference.request", aggregation="max",
              value_property="ttft_ms"),
        Meter(slug="request_events", name="Request events", unit="event", event_type="inference.request",
              aggregation="count", dimensions=["region"]),
        Meter(slug="unique_users", name="Users", unit="user", event_type="inference.request",
              aggregation="unique_count", value_property="user"),
        Meter(slug="queue_depth", name="Queue depth", unit="request", event_type="queue.sample",
              aggregation="latest", value_property="depth"),
    ])
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    def sample(event_id, minute, depth, source="probe/a"):
        return {"specversion": "1.0", "id": event_id, "source": source, "type": "queue.sample",
                "subject": str(external.public_id), "time": (hour + timedelta(minutes=minute)).isoformat(),
                "data": {"depth": depth}}

    batches = [
        [request_event(external, "a", time=hour, ttft_ms=120.5, user="u1", region="eu"),
         request_event(external, "b", time=hour + timedelta(minutes=5), ttft_ms=80.25, user="u2"),
         sample("q1", 10, 4), sample("q2", 20, 9)],
        [request_event(external, "c", time=hour + timedelta(minutes=50), ttft_ms=300.0, user="u1", region="eu"),
         request_event(external, "a", time=hour, ttft_ms=999.0, user="u9"),  # a duplicate: counts nowhere
         sample("q3", 20, 2, source="probe/b"), sample("q0", 5, 50)],  # a tie on time, and a late sample
    ]
    for batch in batches:
        usage_ingest(batch)
    meters = meter_specs()
    stored = [ValidEvent(0, e.event_id, e.source, e.type, "", e.time, e.data, b"", e.tenant_id, e.deployment_id,
                         e.billing_period) for e in UsageEvent.objects.all()]
    expected = {(key.meter_id, key.dimensions_key): delta.quantity for key, delta in aggregate(stored, meters).items()}
    stored_rollups = {(r.meter_id, r.dimensions_key): r.quantity for r in UsageRollup.objects.all()}
    assert stored_rollups == expected
    by_slug = {(r.meter.slug, r.dimensions_key): r.quantity for r in UsageRollup.objects.select_related("meter")}
    assert by_slug[("max_ttft", "")] == Decimal("300")
    assert by_slug[("unique_users", "")] == 2
    assert by_slug[("queue_depth", "")] == 2  # minute 20, tie broken by the greater (source, id): probe/b
    assert by_slug[("request_events", "region=eu")] == 2 and by_slug[("request_events", "")] == 1


def test_meters_specs_are_the_active_meters(db):
    Meter.objects.filter(slug="requests").update(active=False)
    assert "requests" not in {meter.slug for meter in meter_specs()}
    assert isinstance(meter_specs()[0], MeterSpec)


def test_the_purge_deletes_raw_events_past_retention_and_keeps_rollups(external, settings):
    now = timezone.now()
    usage_ingest([request_event(external, "old", time=now - timedelta(days=20)),
                  request_event(external, "new", time=now - timedelta(days=1))])
    later = now + timedelta(days=settings.USAGE_RETENTION_DAYS - 10)
    assert usage_event_purge(now=later, batch_size=1) == 1
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["new"]
    assert rollup(external, "input_tokens") == 200
    assert usage_event_purge(now=later) == 0


def test_time_window_is_judged_against_now(external):
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    result = usage_ingest([request_event(external, "in", time=now - timedelta(days=30)),
                           request_event(external, "out", time=now - timedelta(days=40))], now=now)
    assert result.accepted == 1 and [r.id for r in result.rejected] == ["out"]
    assert UsageEvent.objects.get().billing_period == date(2026, 11, 1)


# --- meters added by staff --------------------------------------------------------------------


@pytest.fixture
def staff_client(db, client):
    from tests.factories import UserFactory

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_a_meter_staff_add_in_the_admin_meters_the_next_batch(staff_client, fleet, external):
    form = {"slug": "longest_prompt", "name": "Longest prompt", "unit": "token", "event_type": "inference.request",
            "aggregation": "max", "value_property": "input_tokens", "dimensions": "[]", "active": "on"}
    missing_property = staff_client.post("/admin/billing/meter/add/", {**form, "value_property": ""})
    assert missing_property.status_code == 200 and b"Which key of the event" in missing_property.content
    assert not Meter.objects.filter(slug="longest_prompt").exists()

    assert staff_client.post("/admin/billing/meter/add/", form).status_code == 302
    ingest(fleet, [request_event(external, "a", input_tokens=300), request_event(external, "b", input_tokens=900)])
    assert rollup(external, "longest_prompt") == 900
    assert rollup(external, "input_tokens") == 1200


def test_built_in_meters_cannot_be_changed_or_deleted_in_the_admin(staff_client):
    meter = Meter.objects.get(slug="input_tokens")
    staff_client.post(f"/admin/billing/meter/{meter.pk}/change/",
                      {"slug": "input_tokens", "name": "Renamed", "unit": "x", "event_type": "other",
                       "aggregation": "count", "value_property": "", "dimensions": "[]"})
    meter.refresh_from_db()
    assert (meter.name, meter.event_type, meter.aggregation) == ("Input tokens", "inference.request", "sum")
    assert staff_client.post(f"/admin/billing/meter/{meter.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Meter.objects.filter(pk=meter.pk).exists()

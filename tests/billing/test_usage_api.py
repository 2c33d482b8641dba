"""GET /api/v1/usage and GET /api/v1/meters: usage read from the hourly rollups, grouped and
summed exactly, paginated by cursor, exported as CSV, and never another tenant's."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from scheduler.models import Deployment
from tests.billing.factories import UsageRollupFactory, at
from tests.cross_tenant_objects import make_deployment

URL = "/api/v1/usage"
MARCH = {"start": "2025-03-01", "end": "2025-03-31"}


@pytest.fixture
def chat(tenant_a):
    return make_deployment(tenant_a, name="chat")


@pytest.fixture
def search(tenant_a):
    return make_deployment(tenant_a, name="search")


def get(world, **params):
    response = world.api.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


def rows_of(world, **params) -> list[dict]:
    return get(world, **params)["results"]


def by(rows, *fields) -> dict:
    return {tuple(row[field] for field in fields): row for row in rows}


def test_quantities_sum_exactly_per_deployment_and_meter(tenant_a, chat, search):
    for hour, quantity in (("2025-03-01T10:00", "0.1"), ("2025-03-01T11:00", "0.2"), ("2025-03-02T00:00", "1250000")):
        UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at(hour), quantity=quantity, event_count=2)
    UsageRollupFactory(deployment=chat, meter="input_tokens", hour=at("2025-03-01T10:00"), quantity="812")
    UsageRollupFactory(deployment=search, meter="output_tokens", hour=at("2025-03-01T10:00"), quantity="3600.5")

    rows = by(rows_of(tenant_a, group_by="deployment,meter", **MARCH), "deployment_name", "meter")
    assert set(rows) == {("chat", "output_tokens"), ("chat", "input_tokens"), ("search", "output_tokens")}
    # 0.1 + 0.2 is 0.3 exactly, not 0.30000000000000004: quantities are decimals end to end.
    assert rows["chat", "output_tokens"]["quantity"] == "1250000.3"
    assert rows["chat", "output_tokens"]["events"] == 6
    assert rows["chat", "output_tokens"]["unit"] == "token"
    assert rows["chat", "output_tokens"]["deployment_id"] == str(chat.public_id)
    assert rows["chat", "input_tokens"]["quantity"] == "812"
    assert rows["search", "output_tokens"]["quantity"] == "3600.5"
    assert rows["chat", "output_tokens"]["period_start"] is None and rows["chat", "output_tokens"]["tier"] is None

    per_meter = by(rows_of(tenant_a, group_by="meter", **MARCH), "meter")
    assert per_meter["output_tokens",]["quantity"] == "1253600.8"
    assert per_meter["output_tokens",]["deployment_id"] is None


def test_rows_are_always_per_meter_because_units_never_add_up(tenant_a, chat):
    UsageRollupFactory(deployment=chat, meter="output_tokens", quantity="100")
    UsageRollupFactory(deployment=chat, meter="requests", quantity="3")
    rows = rows_of(tenant_a, group_by="", **MARCH)
    assert sorted((row["meter"], row["quantity"]) for row in rows) == [("output_tokens", "100"), ("requests", "3")]


def test_day_buckets_are_utc_days(tenant_a, chat):
    # 23:00 and 00:00 are one hour apart but on two UTC days.
    UsageRollupFactory(deployment=chat, hour=at("2025-03-01T00:00"), quantity="1")
    UsageRollupFactory(deployment=chat, hour=at("2025-03-01T23:00"), quantity="2")
    UsageRollupFactory(deployment=chat, hour=at("2025-03-02T00:00"), quantity="4")
    days = rows_of(tenant_a, group_by="day,meter", **MARCH)
    assert [(row["period_start"], row["quantity"]) for row in days] == [
        ("2025-03-01T00:00:00Z", "3"), ("2025-03-02T00:00:00Z", "4")]
    hours = rows_of(tenant_a, group_by="hour", **MARCH)
    assert [(row["period_start"], row["quantity"]) for row in hours] == [
        ("2025-03-01T00:00:00Z", "1"), ("2025-03-01T23:00:00Z", "2"), ("2025-03-02T00:00:00Z", "4")]


def test_an_hour_counts_when_it_begins_in_the_range_and_a_date_end_includes_that_day(tenant_a, chat):
    for hour in ("2025-02-28T23:00", "2025-03-01T00:00", "2025-03-31T23:00", "2025-04-01T00:00"):
        UsageRollupFactory(deployment=chat, hour=at(hour), quantity="1")
    total = rows_of(tenant_a, group_by="meter", start="2025-03-01", end="2025-03-31")
    assert total[0]["quantity"] == "2"
    # An RFC 3339 end is exclusive, offsets are honoured (+01:00 → 23:00 UTC the day before).
    page = get(tenant_a, group_by="hour", start="2025-03-01T00:00:00Z", end="2025-04-01T00:00:00+01:00")
    assert [row["period_start"] for row in page["results"]] == ["2025-03-01T00:00:00Z"]
    assert page["end"] == "2025-03-31T23:00:00Z"


def test_the_default_range_is_this_month_so_far(tenant_a, chat):
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    UsageRollupFactory(deployment=chat, hour=month_start, quantity="5")
    UsageRollupFactory(deployment=chat, hour=month_start - timedelta(hours=1), quantity="7")  # last month
    page = get(tenant_a, group_by="meter")
    assert [row["quantity"] for row in page["results"]] == ["5"]
    assert page["start"] == month_start.isoformat().replace("+00:00", "Z")
    assert page["group_by"] == ["meter"]


def test_tier_groups_accelerator_seconds_by_hardware_tier(tenant_a, chat):
    UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="h100-80gb-on-demand", quantity="3600")
    UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="h100-80gb-on-demand",
                       hour=at("2025-03-01T11:00"), quantity="1800")
    UsageRollupFactory(deployment=chat, meter="accelerator_seconds", tier="l4-24gb-spot", quantity="60")
    UsageRollupFactory(deployment=chat, meter="output_tokens", quantity="9")
    rows = by(rows_of(tenant_a, group_by="meter,tier", **MARCH), "meter", "tier")
    assert rows["accelerator_seconds", "h100-80gb-on-demand"]["quantity"] == "5400"
    assert rows["accelerator_seconds", "l4-24gb-spot"]["quantity"] == "60"
    assert rows["output_tokens", None]["quantity"] == "9"  # not a per-tier meter
    assert rows["accelerator_seconds", "l4-24gb-spot"]["unit"] == "accelerator-second"


def test_filters_by_deployment_and_meter(tenant_a, chat, search):
    UsageRollupFactory(deployment=chat, meter="output_tokens", quantity="1")
    UsageRollupFactory(deployment=chat, meter="input_tokens", quantity="2")
    UsageRollupFactory(deployment=search, meter="output_tokens", quantity="4")
    rows = rows_of(tenant_a, deployment=str(chat.public_id), meter="output_tokens", **MARCH)
    assert [(row["deployment_name"], row["meter"], row["quantity"]) for row in rows] == [("chat", "output_tokens", "1")]


def test_a_deleted_deployment_keeps_its_usage(tenant_a, chat):
    UsageRollupFactory(deployment=chat, quantity="11")
    # Where deletion ends (the reconcile loop's last step): the row stays, hidden by `objects`.
    Deployment.all_objects.filter(pk=chat.pk).update(status=Deployment.Status.DELETED, deleted_at=timezone.now())
    assert not Deployment.objects.filter(pk=chat.pk).exists()
    rows = rows_of(tenant_a, deployment=str(chat.public_id), group_by="deployment", **MARCH)
    assert [(row["deployment_name"], row["quantity"]) for row in rows] == [("chat", "11")]


def test_another_tenants_usage_never_shows(tenant_a, tenant_b, chat):
    theirs = make_deployment(tenant_b, name="theirs")
    UsageRollupFactory(deployment=chat, quantity="1")
    UsageRollupFactory(deployment=theirs, quantity="1000")
    rows = rows_of(tenant_a, group_by="deployment,meter", **MARCH)
    assert [(row["deployment_name"], row["quantity"]) for row in rows] == [("chat", "1")]
    csv_text = tenant_a.api.get(URL, {"format": "csv", **MARCH}).getvalue().decode()
    assert str(theirs.public_id) not in csv_text and "theirs" not in csv_text


def test_another_tenants_deployment_as_a_filter_is_not_found_like_a_missing_one(tenant_a, tenant_b):
    theirs = make_deployment(tenant_b, name="theirs")
    UsageRollupFactory(deployment=theirs, quantity="1000")
    response = tenant_a.api.get(URL, {"deployment": str(theirs.public_id), **MARCH})
    missing = tenant_a.api.get(URL, {"deployment": "00000000-0000-0000-0000-000000000000", **MARCH})
    assert response.status_code == missing.status_code == 404
    assert response.json()["detail"] == missing.json()["detail"] == "Deployment not found."


def test_csv_export_has_every_row_with_the_same_columns(tenant_a, chat, search):
    UsageRollupFactory(deployment=chat, meter="output_tokens", hour=at("2025-03-01T10:00"), quantity="0.25",
                       event_count=3)
    UsageRollupFactory(deployment=search, meter="accelerator_seconds", tier="l4-24gb-spot",
                       hour=at("2025-03-02T10:00"), quantity="7200")
    for response in (tenant_a.api.get(URL, {"format": "csv", **MARCH}),
                     tenant_a.api.get(URL, MARCH, HTTP_ACCEPT="text/csv")):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert response["Content-Disposition"] == 'attachment; filename="usage-20250301T0000-20250401T0000.csv"'
        table = list(csv.reader(io.StringIO(response.getvalue().decode())))
        assert table == [
            ["period_start", "deployment_id", "deployment_name", "meter", "unit", "tier", "quantity", "events"],
            ["2025-03-01T00:00:00+00:00", str(chat.public_id), "chat", "output_tokens", "token", "", "0.25", "3"],
            ["2025-03-02T00:00:00+00:00", str(search.public_id), "search", "accelerator_seconds",
             "accelerator-second", "l4-24gb-spot", "7200", "1"],
        ]


def test_csv_is_not_paginated(tenant_a, chat):
    for hour in range(24):
        UsageRollupFactory(deployment=chat, hour=at("2025-03-01T00:00") + timedelta(hours=hour), quantity="1")
    response = tenant_a.api.get(URL, {"format": "csv", "group_by": "hour", "page_size": "5", **MARCH})
    assert len(response.getvalue().decode().strip().splitlines()) == 1 + 24


def test_a_bad_request_asked_as_csv_is_still_a_json_problem(tenant_a):
    response = tenant_a.api.get(URL, {"format": "csv", "start": "2025-03-02", "end": "2025-03-01"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_cursor_pages_walk_every_row_once_forward_and_back(tenant_a, chat, search):
    for hour in range(5):
        for deployment in (chat, search):
            UsageRollupFactory(deployment=deployment, hour=at("2025-03-01T00:00") + timedelta(hours=hour),
                               quantity=str(hour + 1))
    everything = rows_of(tenant_a, group_by="hour,deployment", **MARCH)
    assert len(everything) == 10
    for size in (1, 3, 4, 10):
        pages, page = [], get(tenant_a, group_by="hour,deployment", page_size=size, **MARCH)
        assert page["previous"] is None
        pages.append(page["results"])
        while page["next"]:
            page = tenant_a.api.get(page["next"]).json()
            pages.append(page["results"])
        assert [row for results in pages for row in results] == everything
        assert all(len(results) <= size for results in pages)
        # And back from the last page to the first, the same pages in reverse.
        back = [page["results"]]
        while page["previous"]:
            page = tenant_a.api.get(page["previous"]).json()
            back.append(page["results"])
        assert [row for results in reversed(back) for row in results] == everything


def test_a_cursor_of_another_grouping_or_garbage_is_refused(tenant_a, chat):
    for hour in range(3):
        UsageRollupFactory(deployment=chat, hour=at("2025-03-01T00:00") + timedelta(hours=hour))
    next_url = get(tenant_a, group_by="hour", page_size=1, **MARCH)["next"]
    cursor = next_url.split("cursor=")[1].split("&")[0]
    for bad in (cursor, "not-a-cursor", "e30"):
        response = tenant_a.api.get(URL, {"group_by": "day", "cursor": bad, **MARCH})
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("params, field, message", [
    ({"start": "2025-03-02", "end": "2025-03-01"}, "end", "Must be after start"),
    ({"start": "2025-03-01T00:00:00Z", "end": "2025-03-01T00:00:00Z"}, "end", "Must be after start"),
    ({"start": "2024-01-01", "end": "2025-03-01"}, "end", "at most 400 days"),
    ({"start": "yesterday"}, "start", "RFC 3339"),
    ({"start": "2025-02-30"}, "start", "RFC 3339"),
    ({"end": "2025-03-01T00:00:00 01:00"}, "end", "%2B"),  # an unencoded '+' arrives as a space
    ({"group_by": "week"}, "group_by", "Unknown grouping week"),
    ({"group_by": "hour,day"}, "group_by", "not both"),
    ({"meter": "gpu_hours"}, "meter", "GET /api/v1/meters"),
    ({"deployment": "chat"}, "deployment", "UUID"),
    ({"page_size": "501"}, "page_size", "500"),
    ({"format": "xml"}, "format", "not a valid choice"),
    ({"colour": "blue"}, "colour", "Unknown field"),
])
def test_bad_parameters_are_400_problems_naming_the_field(tenant_a, params, field, message):
    response = tenant_a.api.get(URL, params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["errors"][0]["field"] == field
    assert message in body["detail"]


def test_no_usage_is_an_empty_page(tenant_a):
    page = get(tenant_a, **MARCH)
    assert page["results"] == [] and page["next"] is None and page["previous"] is None


def test_group_by_may_be_repeated(tenant_a, chat):
    UsageRollupFactory(deployment=chat)
    response = tenant_a.api.get(f"{URL}?group_by=day&group_by=deployment&start=2025-03-01&end=2025-03-31")
    assert response.json()["group_by"] == ["day", "deployment", "meter"]


def test_every_role_reads_usage_with_the_read_scope(tenant_a, chat):
    UsageRollupFactory(deployment=chat, quantity="5")
    assert tenant_a.client_with_scopes("read").get(URL, MARCH).status_code == 200
    response = tenant_a.client_with_scopes("deploy").get(URL, MARCH)
    assert response.status_code == 403 and "'read' scope" in response.json()["detail"]


@pytest.mark.postgres
def test_large_quantities_sum_exactly_on_postgresql(tenant_a, chat):
    # 21 significant digits: a float (SQLite's arithmetic) would lose the last ones.
    for hour in range(3):
        UsageRollupFactory(deployment=chat, hour=at("2025-03-01T00:00") + timedelta(hours=hour),
                           quantity="123456789012.123456789")
    assert rows_of(tenant_a, group_by="meter", **MARCH)[0]["quantity"] == str(Decimal("123456789012.123456789") * 3)


def test_meters_list_the_definitions(tenant_a):
    response = tenant_a.api.get("/api/v1/meters")
    assert response.status_code == 200
    meters = {meter["slug"]: meter for meter in response.json()}
    assert {"input_tokens", "output_tokens", "requests", "accelerator_seconds"} <= set(meters)
    seconds = meters["accelerator_seconds"]
    assert seconds["unit"] == "accelerator-second" and seconds["per_tier"] is True and seconds["built_in"] is True
    assert meters["output_tokens"]["event_type"] == "inference.request"
    assert meters["output_tokens"]["aggregation"] == "sum" and meters["output_tokens"]["value_property"] == "output_tokens"

"""Accelerator-seconds per replica-minute (billing/accelerators.py): exact partial minutes,
deterministic ids, and minutes that add up to the time held."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing.accelerators import Holding, held_microseconds, minutes, rfc3339, usage_events

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SOURCE = "switchyard/collector/accelerators"


def holding(start, end, accelerators=2, replica="r-1"):
    return Holding(replica=replica, deployment="d-1", tier="h100-80gb-on-demand", hardware="h100-80gb",
                   accelerators=accelerators, start=start, end=end)


def test_a_partial_minute_bills_the_exact_seconds_held():
    placed = T0 + timedelta(seconds=20, microseconds=250_000)
    [event] = usage_events([holding(placed, None)], T0, source=SOURCE)
    assert event["id"] == "r-1:2030-01-01T12:00:00Z"
    assert event["type"] == "accelerator.usage" and event["subject"] == "d-1" and event["source"] == SOURCE
    assert event["time"] == "2030-01-01T12:00:00Z"
    assert event["data"] == {"tier": "h100-80gb-on-demand", "hardware": "h100-80gb", "accelerators": 2,
                             "seconds": 39.75, "accelerator_seconds": 79.5, "replica": "r-1"}


def test_a_replica_that_stopped_before_the_minute_has_no_event():
    assert usage_events([holding(T0 - timedelta(hours=1), T0)], T0, source=SOURCE) == []
    assert usage_events([holding(T0 + timedelta(minutes=1), None)], T0, source=SOURCE) == []


def test_the_same_replica_minute_is_the_same_event():
    replica = holding(T0 - timedelta(minutes=5), T0 + timedelta(seconds=30))
    assert usage_events([replica], T0, source=SOURCE) == usage_events([replica], T0, source=SOURCE)
    ids = {usage_events([replica], minute, source=SOURCE)[0]["id"]
           for minute in minutes(T0 - timedelta(minutes=5), T0 + timedelta(minutes=1))}
    assert len(ids) == 6


def test_rfc3339_is_utc_with_a_z():
    assert rfc3339(datetime(2030, 1, 1, 13, 0, tzinfo=UTC)) == "2030-01-01T13:00:00Z"
    assert rfc3339(datetime(2030, 1, 1, 13, 0, 0, 5, tzinfo=UTC)) == "2030-01-01T13:00:00.000005Z"


offsets = st.integers(min_value=-3_600_000_000, max_value=4 * 3_600_000_000)  # microseconds from T0


@given(st.lists(st.tuples(offsets, st.one_of(st.none(), st.integers(min_value=0, max_value=3 * 3_600_000_000)),
                          st.integers(min_value=1, max_value=8)), min_size=1, max_size=8))
def test_minutes_add_up_to_the_exact_time_held_in_the_window(raw):
    window_start, window_end = T0, T0 + timedelta(hours=2)
    holdings = [holding(T0 + timedelta(microseconds=start),
                        None if length is None else T0 + timedelta(microseconds=start + length), accelerators,
                        replica=f"r-{index}")
                for index, (start, length, accelerators) in enumerate(raw)]
    billed_us = 0
    for minute in minutes(window_start, window_end):
        for event in usage_events(holdings, minute, source=SOURCE):
            data = event["data"]
            assert 0 < data["seconds"] <= 60
            # A float of whole microseconds: the six decimals it prints are the exact ones.
            billed_us += round(data["accelerator_seconds"] * 1_000_000)
            assert abs(data["accelerator_seconds"] - data["accelerators"] * data["seconds"]) < 1e-9
    expected_us = sum(h.accelerators * held_microseconds(h, window_start, window_end) for h in holdings)
    assert billed_us == expected_us

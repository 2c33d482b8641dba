"""billing.metering, the pure core of ingestion: event validation, and rollup deltas that merge
into exactly the meters' aggregation of the distinct raw events, whatever the order, the
repeats and the lateness of the batches."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.metering import (
    ACCELERATOR_USAGE,
    INFERENCE_REQUEST,
    RECOMPUTED_AGGREGATIONS,
    SCRAPE_COLLECTOR_SOURCE,
    MeterSpec,
    Rejection,
    ValidEvent,
    aggregate,
    billing_period_for,
    dimensions_of,
    first_occurrences,
    merge_delta,
    quantity_of,
    rollup_deltas,
    shapes_for,
    token_source_of,
    validate_event,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=35)
BUILT_IN = [
    MeterSpec(1, "input_tokens", INFERENCE_REQUEST, "sum", "input_tokens"),
    MeterSpec(2, "output_tokens", INFERENCE_REQUEST, "sum", "output_tokens"),
    MeterSpec(3, "requests", INFERENCE_REQUEST, "sum", "requests"),
    MeterSpec(4, "accelerator_seconds", ACCELERATOR_USAGE, "sum", "accelerator_seconds", per_tier=True),
]
CUSTOM = [
    MeterSpec(10, "max_ttft", INFERENCE_REQUEST, "max", "ttft_ms"),
    MeterSpec(11, "request_events", INFERENCE_REQUEST, "count", dimensions=("region",)),
    MeterSpec(12, "unique_users", INFERENCE_REQUEST, "unique_count", "user"),
    MeterSpec(13, "queue_depth", "queue.sample", "latest", "depth"),
    MeterSpec(14, "tokens_by_region", INFERENCE_REQUEST, "sum", "output_tokens", dimensions=("region", "model")),
]
METERS = BUILT_IN + CUSTOM
SHAPES = shapes_for(METERS)


def raw_event(**overrides) -> dict:
    event = {"specversion": "1.0", "id": "req-1", "source": "gateway/eu-1", "type": INFERENCE_REQUEST,
             "subject": "dep-1", "time": "2026-12-02T11:59:00Z",
             "data": {"input_tokens": 812, "output_tokens": 190, "ttft_ms": 143.2}}
    for name, value in overrides.items():
        if value is ...:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def validate(raw, index=0):
    return validate_event(index, raw, now=NOW, max_age=MAX_AGE, known_types=SHAPES)


# --- validation -----------------------------------------------------------------------------------


def test_a_valid_event_is_parsed_with_defaults_and_utc_time():
    event = validate(raw_event(time="2026-12-02T13:59:00.123456789+02:00"))
    assert isinstance(event, ValidEvent)
    assert (event.id, event.source, event.subject) == ("req-1", "gateway/eu-1", "dep-1")
    assert event.time == datetime(2026, 12, 2, 11, 59, 0, 123456, tzinfo=UTC)  # nanoseconds truncated
    assert event.data["requests"] == 1  # an event is one request unless it says more
    assert event.data_json == b'{"input_tokens":812,"output_tokens":190,"ttft_ms":143.2,"requests":1}'


def test_whole_number_floats_count_as_whole_numbers():
    event = validate(raw_event(data={"input_tokens": 812.0, "output_tokens": 0, "requests": 3.0}))
    assert event.data == {"input_tokens": 812, "output_tokens": 0, "requests": 3}
    assert type(event.data["input_tokens"]) is int


@pytest.mark.parametrize("raw, reason", [
    ([], "must be a JSON object"),
    (raw_event(specversion=...), "specversion is missing"),
    (raw_event(specversion="0.3"), 'specversion must be "1.0"'),
    (raw_event(id=...), "id must be a non-empty string"),
    (raw_event(id=""), "id must be a non-empty string"),
    (raw_event(id=7), "id must be a non-empty string"),
    (raw_event(id="x" * 256), "id is longer than 255 characters"),
    (raw_event(id="a\x00b"), "id must not contain NUL"),
    (raw_event(source=...), "source must be a non-empty string"),
    (raw_event(type="inference.reqest"), "type 'inference.reqest' is unknown: the known types are"),
    (raw_event(type=None), "type must be a non-empty string"),
    (raw_event(subject=...), "subject (the deployment's id) must be a non-empty string"),
    (raw_event(time=...), "time is missing"),
    (raw_event(time="yesterday"), "is not RFC 3339 with an offset"),
    (raw_event(time="2026-12-02T11:59:00"), "is not RFC 3339 with an offset"),  # no offset
    (raw_event(time="2026-12-02"), "is not RFC 3339 with an offset"),
    (raw_event(time="2026-02-30T10:00:00Z"), "is not a valid date and time"),
    (raw_event(time=1764676740), "time must be an RFC 3339 string"),
    (raw_event(time="2026-12-02T12:05:01Z"), "more than 5 minutes in the future"),
    (raw_event(time="2026-10-28T11:59:59Z"), "older than the 35 days accepted"),
    (raw_event(data=...), "data is missing"),
    (raw_event(data=[1, 2]), "data must be a JSON object"),
    (raw_event(data=..., data_base64="AAAA"), "data_base64 is not accepted"),
    (raw_event(data={"output_tokens": 1}), "data.input_tokens is missing"),
    (raw_event(data={"input_tokens": -1, "output_tokens": 1}), "data.input_tokens must not be negative"),
    (raw_event(data={"input_tokens": "12", "output_tokens": 1}), "data.input_tokens must be a whole number ≥ 0"),
    (raw_event(data={"input_tokens": True, "output_tokens": 1}), "data.input_tokens must be a whole number ≥ 0"),
    (raw_event(data={"input_tokens": 1.5, "output_tokens": 1}), "data.input_tokens must be a whole number"),
    (raw_event(data={"input_tokens": 10**16, "output_tokens": 1}), "data.input_tokens is larger than"),
    (raw_event(data={"input_tokens": 1, "output_tokens": 1, "ttft_ms": float("nan")}),
     "data.ttft_ms must be a finite number"),
    (raw_event(data={"input_tokens": 1, "output_tokens": 1, "ttft_ms": -0.5}), "data.ttft_ms must not be negative"),
    (raw_event(data={"input_tokens": 1, "output_tokens": 1, "user": {"id": 1}}),
     "data.user must be a string, number or boolean"),
    (raw_event(data={"input_tokens": 1, "output_tokens": 1, "note": "a\x00b"}), "must not contain NUL"),
    (raw_event(data={"input_tokens": 1, "output_tokens": 1, "region": "r" * 400}), "longer than 300 characters"),
    (raw_event(type=ACCELERATOR_USAGE, data={"accelerator_seconds": 60}), "data.tier is missing"),
    (raw_event(type=ACCELERATOR_USAGE, data={"tier": "", "accelerator_seconds": 60}),
     "data.tier must be a non-empty string of at most 60 characters"),
    (raw_event(type="queue.sample", data={}), "data.depth is missing"),  # a custom type's value is required
])
def test_a_bad_event_is_rejected_with_a_reason(raw, reason):
    rejection = validate(raw, index=4)
    assert isinstance(rejection, Rejection), rejection
    assert rejection.index == 4
    assert reason in rejection.reason
    sent_id = raw.get("id") if isinstance(raw, dict) else None
    assert rejection.id == (sent_id[:255] if isinstance(sent_id, str) and sent_id else None)


def test_the_edges_of_the_accepted_time_window_are_inside():
    assert isinstance(validate(raw_event(time="2026-12-02T12:05:00Z")), ValidEvent)
    assert isinstance(validate(raw_event(time="2026-10-28T12:00:00Z")), ValidEvent)


def test_token_source_is_scrape_only_for_the_scrape_collector():
    assert token_source_of(SCRAPE_COLLECTOR_SOURCE) == "scrape"
    assert token_source_of("gateway/eu-1") == "external"


def test_first_occurrence_in_a_batch_wins():
    events = [validate(raw_event(id=i, source=s), index=n)
              for n, (s, i) in enumerate([("a", "1"), ("b", "1"), ("a", "1"), ("a", "2"), ("b", "1")])]
    firsts, repeats = first_occurrences(events)
    assert [e.index for e in firsts] == [0, 1, 3]
    assert repeats == [(2, "1"), (4, "1")]


def test_a_closed_month_bills_late_events_in_the_open_month():
    late = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert billing_period_for(late, now=NOW, closed=False) == date(2026, 11, 1)
    assert billing_period_for(late, now=NOW, closed=True) == date(2026, 12, 1)


def test_quantities_are_counted_to_nine_places():
    assert quantity_of(0.1) + quantity_of(0.2) == Decimal("0.3")
    assert quantity_of(1e-10) == Decimal("0E-9")
    assert quantity_of(0.0000000015) == Decimal("0.000000002")  # half up
    assert quantity_of(812) == 812


def test_dimensions_key_is_canonical_and_unambiguous():
    assert dimensions_of(("region", "model"), {"model": "m|x", "region": "eu=1", "other": 1}) == \
        ("model=m\\|x|region=eu\\=1", {"region": "eu=1", "model": "m|x"})
    assert dimensions_of(("region",), {"region": 3}) == ("region=3", {"region": 3})
    assert dimensions_of(("region",), {}) == ("", {})


# --- rollups: the property ----------------------------------------------------------------------

HOURS = [datetime(2026, 11, 30, 22, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC),
         datetime(2026, 12, 1, 0, tzinfo=UTC)]


@st.composite
def events(draw) -> ValidEvent:
    """Placed events with few distinct ids (so repeats happen), over three hours and two months."""
    kind = draw(st.sampled_from([INFERENCE_REQUEST, ACCELERATOR_USAGE, "queue.sample"]))
    if kind == INFERENCE_REQUEST:
        data = {"input_tokens": draw(st.integers(0, 5000)), "output_tokens": draw(st.integers(0, 2000)),
                "requests": draw(st.integers(1, 3)),
                "ttft_ms": draw(st.floats(0, 5000, allow_nan=False).map(lambda x: round(x, 3)))}
        for name, values in (("region", ["eu", "us", 7]), ("model", ["a", "b"]), ("user", ["u1", "u2", 3, "3"])):
            if draw(st.booleans()):
                data[name] = draw(st.sampled_from(values))
    elif kind == ACCELERATOR_USAGE:
        data = {"tier": draw(st.sampled_from(["h100", "l40s"])), "accelerators": 8,
                "accelerator_seconds": draw(st.floats(0, 480, allow_nan=False).map(lambda x: round(x, 6)))}
    else:
        data = {"depth": draw(st.integers(0, 50))}
    time = draw(st.sampled_from(HOURS)) + timedelta(minutes=draw(st.sampled_from([0, 0, 30, 59])))
    deployment = draw(st.sampled_from([1, 2]))
    closed = draw(st.booleans())  # was the event's month closed when it arrived?
    return ValidEvent(index=0, id=draw(st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"])),
                      source=draw(st.sampled_from(["gw-a", "gw-b"])), type=kind, subject=str(deployment), time=time,
                      data=data, data_json=b"", tenant_id=100 + deployment, deployment_id=deployment,
                      billing_period=billing_period_for(time, now=NOW, closed=closed))


def _ingest_like_the_service(stored: dict, rollups: dict, batch: list[ValidEvent], meters) -> None:
    """What billing.services.usage_ingest does, with dicts for tables: store the first occurrence of
    each new (source, id), merge the deltas of exactly those, recompute the non-mergeable keys."""
    firsts, _repeats = first_occurrences(batch)
    new = [event for event in firsts if event.key not in stored]
    for event in new:
        stored[event.key] = event
    deltas = rollup_deltas(new, meters)
    recomputed = aggregate(stored.values(), meters)
    for key, delta in deltas.items():
        if delta.aggregation in RECOMPUTED_AGGREGATIONS:
            rollups[key] = recomputed[key]
        else:
            rollups[key] = merge_delta(rollups.get(key), delta)


def _comparable(rollups: dict) -> dict:
    return {key: (delta.quantity, delta.event_count, delta.latest_time) for key, delta in rollups.items()}


@settings(max_examples=120, deadline=None)
@given(batches=st.lists(st.lists(events(), max_size=12), max_size=8), data=st.data())
def test_merged_deltas_of_new_events_equal_the_aggregation_of_distinct_events(batches, data):
    # Any batches, any order, resent whole or in part (a retry), late or not.
    resent = [data.draw(st.permutations(batch)) for batch in batches if data.draw(st.booleans())]
    order = data.draw(st.permutations(batches + resent))
    stored, rollups = {}, {}
    for batch in order:
        _ingest_like_the_service(stored, rollups, batch, METERS)
    assert _comparable(rollups) == _comparable(aggregate(stored.values(), METERS))


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), unique_by=lambda e: e.key, max_size=20), st.data())
def test_deltas_merge_like_the_union_of_their_events(distinct, data):
    split = data.draw(st.integers(0, len(distinct)))
    left, right = rollup_deltas(distinct[:split], METERS), rollup_deltas(distinct[split:], METERS)
    merged = dict(left)
    for key, delta in right.items():
        merged[key] = merge_delta(merged.get(key), delta)
    whole = rollup_deltas(data.draw(st.permutations(distinct)), METERS)
    assert _comparable(merged) == _comparable(whole)
    assert {k: d.values for k, d in merged.items()} == {k: d.values for k, d in whole.items()}


def test_latest_takes_the_latest_time_and_breaks_ties_by_source_and_id():
    meter = [MeterSpec(13, "queue_depth", "queue.sample", "latest", "depth")]
    at = datetime(2026, 12, 2, 10, 15, tzinfo=UTC)

    def sample(source, event_id, minute, depth):
        return ValidEvent(0, event_id, source, "queue.sample", "d", at + timedelta(minutes=minute), {"depth": depth},
                          b"", 1, 1, date(2026, 12, 1))

    events = [sample("a", "1", 0, 5), sample("b", "1", 1, 7), sample("a", "9", 1, 9), sample("a", "2", -1, 1)]
    for ordering in (events, events[::-1]):
        (delta,) = rollup_deltas(ordering, meter).values()
        assert (delta.quantity, delta.latest[1:]) == (7, ("b", "1"))


def test_unique_count_counts_distinct_json_values_per_hour():
    meter = [CUSTOM[2]]
    at = datetime(2026, 12, 2, 10, 15, tzinfo=UTC)
    events = [ValidEvent(0, str(n), "s", INFERENCE_REQUEST, "d", at + timedelta(minutes=m), {"user": user}, b"", 1, 1,
                         date(2026, 12, 1)) for n, (m, user) in enumerate([(0, "u1"), (5, "u1"), (9, 3), (9, "3"),
                                                                             (60, "u1")])]
    deltas = rollup_deltas(events, meter)
    assert sorted((key.hour.hour, delta.quantity, delta.event_count) for key, delta in deltas.items()) == \
        [(10, 3, 4), (11, 1, 1)]

"""Exactly-once under concurrency (PostgreSQL): the same events posted at once from many
threads, in different orders, through the real endpoint on a live server — each event is
accepted by exactly one request, and the rollups equal the raw totals."""

import json
import random
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import UsageEvent
from scheduler.services import catalog_sync
from tenants.services import service_token_create
from tests.billing.test_ingest import raw_totals, request_event, rollup_totals
from tests.billing.factories import ensure_built_in_meters
from tests.cross_tenant_objects import make_deployment

pytestmark = pytest.mark.postgres

THREADS = 8


def _post(url: str, token: str, events: list[dict]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps({"events": events}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read()[:500].decode(errors="replace")}


def test_the_same_events_posted_concurrently_are_each_counted_once(live_server, tenant_a, tenant_b):
    # A transactional test's database is flushed between tests: seed what migrations seed.
    catalog_sync()
    ensure_built_in_meters()
    chat = make_deployment(tenant_a, name="chat", token_usage_source="external")
    search = make_deployment(tenant_b, name="search", token_usage_source="external")
    _token, token = service_token_create(name="gateways", scopes=["usage:write"])
    base = timezone.now() - timedelta(minutes=40)
    distinct = [request_event([chat, search][n % 2], f"req-{n}", time=base + timedelta(seconds=3 * n),
                              input_tokens=n, output_tokens=n % 17) for n in range(600)]
    # Every thread sends all of them (plus a repeat inside its own batch), each in its own order,
    # so the transactions meet on the same unique-index entries in every interleaving.
    batches = []
    for seed in range(THREADS):
        batch = distinct + distinct[:10]
        random.Random(seed).shuffle(batch)
        batches.append(batch)
    answers: list = [None] * THREADS
    start = threading.Barrier(THREADS)

    def send(slot: int) -> None:
        start.wait()
        answers[slot] = _post(f"{live_server.url}/api/v1/usage/events", token, batches[slot])

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(status == 202 for status, _ in answers), answers
    bodies = [body for _, body in answers]
    assert sum(body["accepted"] for body in bodies) == len(distinct)
    for body, batch in zip(bodies, batches, strict=True):
        assert body["accepted"] + body["duplicates"] == len(batch) and body["rejected"] == 0
    # Each event accepted by exactly one request.
    accepted_ids = []
    for body, batch in zip(bodies, batches, strict=True):
        duplicate = {d["index"] for d in body["duplicate_events"]}
        accepted_ids += [event["id"] for index, event in enumerate(batch) if index not in duplicate]
    assert sorted(accepted_ids) == sorted(event["id"] for event in distinct)
    assert UsageEvent.objects.count() == len(distinct)
    assert rollup_totals() == raw_totals()

"""Webhooks: signing (pure), which URLs may be sent to, the retry schedule, and delivery end to
end against a real HTTP receiver on this machine that verifies every signature."""

import json
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings as hypothesis_settings, strategies as st

from console.celery import app as celery_app
from tests.cross_tenant_objects import make_deployment
from tests.factories import MembershipFactory, UserFactory
from tenants import webhooks
from tenants.context import system_actor
from tenants.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from tenants.requests import SESSION_TENANT_KEY
from tenants.roles import Role
from tenants.webhook_sending import (
    FIRST_RETRY_SECONDS,
    JITTER,
    MAX_RETRY_SECONDS,
    RETRY_WINDOW,
    UrlRefused,
    check_url,
    is_public_address,
    next_attempt_at,
    retry_delay_seconds,
)
from tenants.webhook_signing import SignatureError, generate_secret, parse_header, signature_header, verify

T0 = 1_760_000_000  # a fixed unix time for the pure tests

# --- signing (pure) -------------------------------------------------------------------------


def test_a_signed_body_verifies_and_the_header_has_the_documented_shape():
    secret = generate_secret()
    header = signature_header([secret], T0, b'{"id":"1"}')
    assert re.fullmatch(r"t=1760000000,v1=[0-9a-f]{64}", header)
    assert verify(secret, b'{"id":"1"}', header, now=T0 + 10) == T0


@given(body=st.binary(max_size=300), other=st.binary(max_size=300))
def test_a_tampered_body_fails(body, other):
    secret = "whsec_property"
    header = signature_header([secret], T0, body)
    if other != body:
        with pytest.raises(SignatureError):
            verify(secret, other, header, now=T0)


@given(shift=st.integers(min_value=-10**6, max_value=10**6).filter(lambda n: n != 0))
def test_a_tampered_timestamp_fails(shift):
    secret, body = "whsec_property", b"{}"
    _t, signatures = parse_header(signature_header([secret], T0, body))
    forged = f"t={T0 + shift},v1={signatures[0]}"
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(secret, body, forged, now=T0 + shift)


@given(age=st.integers(min_value=301, max_value=10**7), future=st.booleans())
def test_a_timestamp_outside_five_minutes_fails(age, future):
    secret, body = "whsec_property", b'{"a":1}'
    header = signature_header([secret], T0, body)
    with pytest.raises(SignatureError, match="at most 300 s"):
        verify(secret, body, header, now=T0 - age if future else T0 + age)
    assert verify(secret, body, header, now=T0 + 300) == T0  # the edge of the window still passes


@given(body=st.binary(max_size=100))
def test_rotated_secret_old_fails_new_passes_and_both_pass_during_overlap(body):
    old, new = "whsec_old", "whsec_new"
    with pytest.raises(SignatureError):
        verify(new, body, signature_header([old], T0, body), now=T0)
    overlap = signature_header([new, old], T0, body)
    assert verify(new, body, overlap, now=T0) == verify(old, body, overlap, now=T0) == T0
    with pytest.raises(SignatureError):
        verify("whsec_third", body, overlap, now=T0)


@given(header=st.text(max_size=200))
def test_any_header_text_is_refused_with_a_signature_error_not_a_crash(header):
    with pytest.raises(SignatureError):
        verify("whsec_x", b"body", header, now=T0)


def test_generated_secrets_are_distinct_and_long():
    secrets_ = {generate_secret() for _ in range(50)}
    assert len(secrets_) == 50
    assert all(s.startswith("whsec_") and len(s) >= 6 + 43 for s in secrets_)


def _docs_verifier():
    """The verification function docs/webhooks.md tells receivers to paste, loaded as they would."""
    text = (Path(settings.BASE_DIR) / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    source = next(block for block in blocks if "def verify_switchyard_signature" in block)
    namespace: dict = {}
    exec(compile(source, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify_switchyard_signature"], namespace["InvalidSignature"]


@hypothesis_settings(max_examples=50)
@given(body=st.binary(max_size=200), tampered=st.booleans(), with_old=st.booleans())
def test_the_documented_verifier_agrees_with_the_reference(body, tampered, with_old):
    docs_verify, invalid = _docs_verifier()
    now = int(datetime.now(UTC).timestamp())
    secret = "whsec_docs"
    header = signature_header([secret, "whsec_previous"] if with_old else [secret], now, body)
    sent = body + b"x" if tampered else body
    if tampered:
        with pytest.raises(invalid):
            docs_verify(secret, sent, header)
        with pytest.raises(SignatureError):
            verify(secret, sent, header)
    else:
        docs_verify(secret, sent, header)
        verify(secret, sent, header)
    with pytest.raises(invalid):
        docs_verify(secret, body, signature_header([secret], now - 301, body))


# --- URLs and the retry schedule (pure) -----------------------------------------------------


def _resolver(table: dict[str, list[str]]):
    def resolve(host, port):
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]
    return resolve


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/hook", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("https:///nohost", "no host"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("https://example.com:99999/hook", "not a valid URL"),
    ("https://example.com/" + "a" * 2100, "longer than"),
])
def test_malformed_urls_are_refused_with_a_reason(url, reason):
    with pytest.raises(UrlRefused, match=reason):
        check_url(url, allow_private=True)


@pytest.mark.parametrize("host, addresses", [
    ("localhost", ["127.0.0.1"]),
    ("metadata.internal", ["169.254.169.254"]),
    ("intranet", ["10.1.2.3"]),
    ("half-private", ["93.184.216.34", "192.168.1.10"]),  # any internal answer is enough to refuse
    ("carrier-nat", ["100.64.0.7"]),
    ("v6-loopback", ["::1"]),
    ("v6-mapped", ["::ffff:127.0.0.1"]),
    ("v6-unique-local", ["fd00::1"]),
])
def test_urls_resolving_to_internal_addresses_are_refused_unless_allowed(host, addresses):
    resolver = _resolver({host: addresses})
    with pytest.raises(UrlRefused, match="internal address"):
        check_url(f"https://{host}/hook", allow_private=False, resolver=resolver)
    assert check_url(f"https://{host}/hook", allow_private=True, resolver=resolver).addresses == ()


def test_a_public_url_is_pinned_to_the_addresses_that_were_checked():
    target = check_url("https://hooks.example.com:8443/in?x=1", allow_private=False,
                       resolver=_resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::248"]}))
    assert (target.host, target.port, target.path) == ("hooks.example.com", 8443, "/in?x=1")
    assert target.addresses == ("93.184.216.34", "2606:2800:220:1::248")
    assert target.host_header == "hooks.example.com:8443"


def test_an_unresolvable_host_is_refused_when_private_addresses_are_not_allowed():
    with pytest.raises(UrlRefused, match="does not resolve"):
        check_url("https://nowhere.invalid/", allow_private=False, resolver=_resolver({}))


@given(first=st.integers(0, 255), rest=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
def test_no_private_or_loopback_ipv4_address_counts_as_public(first, rest):
    address = ".".join(map(str, (first, *rest)))
    if first in (0, 10, 127) or (first, rest[0]) in ((169, 254), (192, 168)) or (first == 172 and 16 <= rest[0] < 32):
        assert not is_public_address(address)
        assert not is_public_address(f"::ffff:{address}")


@given(failures=st.integers(min_value=1, max_value=500), seed=st.integers(0, 2**32))
def test_retry_delays_double_from_30_s_with_jitter_and_never_exceed_an_hour(failures, seed):
    delay = retry_delay_seconds(failures, random.Random(seed))
    base = FIRST_RETRY_SECONDS * 2 ** (failures - 1) if failures < 20 else MAX_RETRY_SECONDS
    assert min(base, MAX_RETRY_SECONDS) * (1 - JITTER) <= delay <= MAX_RETRY_SECONDS
    assert delay <= base * (1 + JITTER)


@given(seed=st.integers(0, 2**32))
def test_retries_stop_at_the_first_try_that_would_fall_past_three_days(seed):
    rng = random.Random(seed)
    created = now = datetime(2026, 1, 1, tzinfo=UTC)
    tries = [now]
    while (retry := next_attempt_at(failures=len(tries), created_at=created, now=now, rng=rng)) is not None:
        now = retry
        tries.append(now)
    assert tries[-1] <= created + RETRY_WINDOW
    assert tries[-1] > created + RETRY_WINDOW - timedelta(seconds=MAX_RETRY_SECONDS)  # it did not stop early
    gaps = [(b - a).total_seconds() for a, b in zip(tries, tries[1:], strict=False)]
    assert all(FIRST_RETRY_SECONDS * (1 - JITTER) <= gap <= MAX_RETRY_SECONDS for gap in gaps)
    assert 70 <= len(tries) <= 90


# --- a real receiver ------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request, checks its signature against
    the secrets it is told, and answers with the next scripted status (200 when none is left)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.secrets: list[str] = []
        self.delay = 0.0  # seconds before answering
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    verified = [s for s in receiver.secrets if _verifies(s, body, self.headers)]
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path,
                                              "json": json.loads(body), "verified_with": verified})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/switchyard?source=test"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def event_ids(self) -> list[str]:
        return [request["headers"]["Switchyard-Event-Id"] for request in self.requests]


def _verifies(secret: str, body: bytes, headers) -> bool:
    try:
        verify(secret, body, headers.get("Switchyard-Signature", ""))
    except SignatureError:
        return False
    return True


@pytest.fixture
def receiver():
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def eager_tasks(monkeypatch):
    """Tasks enqueued on commit run right there, in this process, instead of going to a broker."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


def _endpoint(world, url, event_types=("*",), receiver=None):
    endpoint, secret = webhooks.webhook_endpoint_create(actor=system_actor(world.tenant), url=url,
                                                        event_types=list(event_types))
    if receiver is not None:
        receiver.secrets.append(secret)
    return endpoint, secret


def _emit(world, event_type="deployment.status_changed", **data):
    return webhooks.webhook_emit(tenant=world.tenant, event_type=event_type,
                                 data=data or {"deployment": "d-1", "name": "chat", "from": "deploying",
                                               "to": "ready", "reason": "Ready."})


def _fresh(delivery) -> WebhookDelivery:
    return WebhookDelivery.objects.get(pk=delivery.pk)


def test_an_event_is_delivered_signed_right_after_commit(tenant_a, receiver, eager_tasks,
                                                         django_capture_on_commit_callbacks):
    endpoint, secret = _endpoint(tenant_a, receiver.url, receiver=receiver)
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = _emit(tenant_a)
        assert receiver.requests == []  # nothing leaves before the commit
    [request] = receiver.requests
    assert request["verified_with"] == [secret]
    assert request["path"] == "/hooks/switchyard?source=test"
    headers, body = request["headers"], request["json"]
    assert headers["Switchyard-Event-Id"] == body["id"] == str(delivery.event_id)
    assert headers["Switchyard-Event-Type"] == body["type"] == "deployment.status_changed"
    assert headers["Content-Type"] == "application/json" and headers["Switchyard-Delivery-Attempt"] == "1"
    assert body["tenant"] == str(tenant_a.tenant.public_id)
    assert body["data"] == {"deployment": "d-1", "name": "chat", "from": "deploying", "to": "ready", "reason": "Ready."}
    assert datetime.fromisoformat(body["created"]).tzinfo is not None and body["created"].endswith("Z")
    delivery = _fresh(delivery)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert [entry["status_code"] for entry in delivery.attempt_log] == [200]


def test_a_failing_endpoint_is_retried_with_backoff_then_succeeds(tenant_a, receiver, eager_tasks,
                                                                  django_capture_on_commit_callbacks):
    _endpoint(tenant_a, receiver.url, receiver=receiver)
    receiver.statuses = [500, 503]
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = _emit(tenant_a)
    first = _fresh(delivery)
    assert (first.state, first.attempts, first.last_status_code) == ("pending", 1, 500)
    wait = (first.next_attempt_at - first.created_at).total_seconds()
    assert 30 * 0.8 - 1 <= wait <= 30 * 1.2 + 1
    # Not due yet: a sweep now sends nothing.
    assert webhooks.webhook_deliveries_send_due(now=first.next_attempt_at - timedelta(seconds=1)) == 0
    assert webhooks.webhook_deliveries_send_due(now=first.next_attempt_at) == 1
    second = _fresh(delivery)
    assert (second.state, second.attempts, second.last_status_code) == ("pending", 2, 503)
    wait = (second.next_attempt_at - first.next_attempt_at).total_seconds()
    assert 60 * 0.8 <= wait <= 60 * 1.2
    assert webhooks.webhook_deliveries_send_due(now=second.next_attempt_at) == 1
    done = _fresh(delivery)
    assert (done.state, done.attempts, done.last_status_code, done.last_error) == ("succeeded", 3, 200, "")
    assert [entry["status_code"] for entry in done.attempt_log] == [500, 503, 200]
    assert [r["headers"]["Switchyard-Delivery-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len(set(receiver.event_ids())) == 1
    assert all(request["verified_with"] for request in receiver.requests)


def test_delivery_gives_up_three_days_after_the_event(tenant_a):
    # A port nobody listens on: every attempt is refused, so the delivery walks the whole schedule.
    with socket_closed_port() as port:
        _endpoint(tenant_a, f"http://127.0.0.1:{port}/hook")
        [delivery] = _emit(tenant_a)  # not committed in this test: only the sweep sends
        created = _fresh(delivery).created_at
        now = created
        while (current := _fresh(delivery)).state == "pending":
            now = current.next_attempt_at
            assert webhooks.webhook_deliveries_send_due(now=now) == 1
    failed = _fresh(delivery)
    assert failed.state == "failed" and failed.next_attempt_at is None
    assert failed.last_status_code is None and failed.last_error.startswith("Could not connect")
    assert now <= created + RETRY_WINDOW
    assert 70 <= failed.attempts == len(failed.attempt_log) <= 90
    assert webhooks.webhook_deliveries_send_due(now=created + timedelta(days=30)) == 0


class socket_closed_port:
    """A TCP port on 127.0.0.1 that refuses connections (bound, never listening)."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return self.socket.getsockname()[1]

    def __exit__(self, *exc):
        self.socket.close()


def test_an_event_of_a_rolled_back_transaction_is_never_sent(tenant_a, receiver, eager_tasks,
                                                             django_capture_on_commit_callbacks):
    _endpoint(tenant_a, receiver.url, receiver=receiver)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                assert len(_emit(tenant_a)) == 1
                raise RuntimeError("the change failed")
    assert callbacks == []
    assert not WebhookDelivery.objects.exists()
    assert webhooks.webhook_deliveries_send_due() == 0
    assert receiver.requests == []


def test_one_event_has_one_id_on_every_endpoint_and_every_redelivery(tenant_a, receiver, eager_tasks,
                                                                      django_capture_on_commit_callbacks):
    _endpoint(tenant_a, receiver.url, receiver=receiver)
    _endpoint(tenant_a, receiver.url.replace("source=test", "source=second"), ["deployment.status_changed"],
              receiver=receiver)
    with django_capture_on_commit_callbacks(execute=True):
        deliveries = _emit(tenant_a)
    assert len(deliveries) == 2 and len(receiver.requests) == 2
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant_a.api.post(f"/api/v1/webhooks/deliveries/{deliveries[0].public_id}/redeliver")
    assert response.status_code == 202, response.content
    assert len(receiver.requests) == 3
    assert len(set(receiver.event_ids())) == 1
    assert len({request["json"]["id"] for request in receiver.requests}) == 1
    redelivered = _fresh(deliveries[0])
    assert (redelivered.state, redelivered.attempts, len(redelivered.attempt_log)) == ("succeeded", 2, 2)
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="webhook_delivery.redeliver").count() == 1


def test_redelivering_a_given_up_delivery_makes_one_more_attempt(tenant_a, receiver, eager_tasks,
                                                                 django_capture_on_commit_callbacks):
    _endpoint(tenant_a, receiver.url, receiver=receiver)
    [delivery] = _emit(tenant_a)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state="failed", attempts=78, next_attempt_at=None, created_at=timezone.now() - timedelta(days=4))
    receiver.statuses = [500]
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.webhook_delivery_redeliver(actor=system_actor(tenant_a.tenant), delivery=delivery)
    after = _fresh(delivery)
    assert (after.state, after.attempts, after.next_attempt_at) == ("failed", 79, None)  # past the window: no retries
    assert len(receiver.requests) == 1


def test_only_subscribed_active_endpoints_get_an_event(tenant_a, tenant_b):
    subscribed, _ = _endpoint(tenant_a, "https://example.com/a", ["deployment.status_changed"])
    _endpoint(tenant_a, "https://example.com/b", ["invoice.finalized"])
    disabled, _ = _endpoint(tenant_a, "https://example.com/c", ["*"])
    webhooks.webhook_endpoint_update(actor=system_actor(tenant_a.tenant), endpoint=disabled, is_active=False)
    _endpoint(tenant_b, "https://example.com/other-tenant", ["*"])
    deliveries = _emit(tenant_a)
    assert [d.endpoint_id for d in deliveries] == [subscribed.pk]
    assert _emit(tenant_a, "invoice.finalized", number="INV-1")[0].endpoint.url == "https://example.com/b"


def test_unknown_and_reserved_event_types_are_refused(tenant_a):
    _endpoint(tenant_a, "https://example.com/a")
    with pytest.raises(ValueError, match="Unknown webhook event type"):
        webhooks.webhook_emit(tenant=tenant_a.tenant, event_type="invoice.exploded", data={})
    with pytest.raises(ValueError, match="Unknown webhook event type"):
        webhooks.webhook_emit(tenant=tenant_a.tenant, event_type="webhook.test", data={})
    for event_types in (["invoice.exploded"], ["webhook.test"], []):
        response = tenant_a.api.post("/api/v1/webhooks", {"url": "https://example.com/x", "event_types": event_types},
                                     format="json")
        assert response.status_code == 400, response.content
        assert response.json()["errors"][0]["field"] == "event_types"
    assert not WebhookDelivery.objects.exists()


def test_a_registered_event_type_can_be_subscribed_to_and_emitted(tenant_a, monkeypatch):
    monkeypatch.setattr(webhooks, "EVENT_TYPES", dict(webhooks.EVENT_TYPES))
    webhooks.webhook_event_type_register("model.registered", "A model was registered.")
    _endpoint(tenant_a, "https://example.com/a", ["model.registered"])
    assert len(webhooks.webhook_emit(tenant=tenant_a.tenant, event_type="model.registered", data={"x": 1})) == 1


# --- the API --------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_it_signs_deliveries(tenant_a):
    response = tenant_a.api.post("/api/v1/webhooks", {"url": "https://example.com/in", "description": "ops",
                                                      "event_types": ["deployment.status_changed"]}, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_") and created["is_active"] is True
    again = tenant_a.api.get(f"/api/v1/webhooks/{created['id']}").json()
    listed = tenant_a.api.get("/api/v1/webhooks").content.decode()
    assert "secret" not in again and created["secret"] not in listed
    endpoint = WebhookEndpoint.objects.get(public_id=created["id"])
    assert endpoint.signing_secrets(timezone.now()) == [created["secret"]]


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/in", "http:// or https://"),
    ("not a url", "http:// or https://"),
    ("https://user:secret@example.com/in", "credentials"),
    ("", "This field may not be blank"),
])
def test_a_bad_url_is_a_400_problem_on_the_url_field(tenant_a, url, message):
    response = tenant_a.api.post("/api/v1/webhooks", {"url": url, "event_types": ["*"]}, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "url"
    assert message in response.json()["detail"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/in", "http://localhost/in", "http://[::1]/in",
                                 "http://169.254.169.254/latest/meta-data/", "http://10.0.0.8/in"])
def test_internal_addresses_are_refused_unless_allowed(tenant_a, settings, url):
    settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE = False
    response = tenant_a.api.post("/api/v1/webhooks", {"url": url, "event_types": ["*"]}, format="json")
    assert response.status_code == 400, response.content
    assert "internal address" in response.json()["detail"]
    settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE = True
    assert tenant_a.api.post("/api/v1/webhooks", {"url": url, "event_types": ["*"]}, format="json").status_code == 201


def test_a_url_that_turned_internal_is_not_sent_to(tenant_a, receiver, settings):
    _endpoint(tenant_a, receiver.url, receiver=receiver)  # saved while allowed
    settings.SWITCHYARD_WEBHOOK_ALLOW_PRIVATE = False
    [delivery] = _emit(tenant_a)
    assert webhooks.webhook_deliveries_send_due() == 1
    refused = _fresh(delivery)
    assert refused.state == "pending" and "internal address" in refused.last_error
    assert receiver.requests == []


def test_rotation_with_an_overlap_signs_with_both_secrets(tenant_a, receiver, eager_tasks,
                                                          django_capture_on_commit_callbacks):
    endpoint, old = _endpoint(tenant_a, receiver.url, receiver=receiver)
    response = tenant_a.api.post(f"/api/v1/webhooks/{endpoint.public_id}/rotate-secret",
                                 {"previous_secret_valid_hours": 24}, format="json")
    assert response.status_code == 200, response.content
    new = response.json()["secret"]
    assert new != old and response.json()["previous_secret_expires_at"] is not None
    receiver.secrets.append(new)
    with django_capture_on_commit_callbacks(execute=True):
        _emit(tenant_a)
    assert sorted(receiver.requests[-1]["verified_with"]) == sorted([old, new])
    # Rotating again without an overlap: only the newest secret signs.
    newest = tenant_a.api.post(f"/api/v1/webhooks/{endpoint.public_id}/rotate-secret", {}, format="json").json()
    assert newest["previous_secret_expires_at"] is None
    receiver.secrets.append(newest["secret"])
    with django_capture_on_commit_callbacks(execute=True):
        _emit(tenant_a)
    assert receiver.requests[-1]["verified_with"] == [newest["secret"]]
    too_long = tenant_a.api.post(f"/api/v1/webhooks/{endpoint.public_id}/rotate-secret",
                                 {"previous_secret_valid_hours": 73}, format="json")
    assert too_long.status_code == 400


def test_a_test_event_goes_to_that_endpoint_only(tenant_a, receiver, eager_tasks, django_capture_on_commit_callbacks):
    endpoint, _ = _endpoint(tenant_a, receiver.url, ["invoice.finalized"], receiver=receiver)
    _endpoint(tenant_a, receiver.url + "&other=1", receiver=receiver)
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant_a.api.post(f"/api/v1/webhooks/{endpoint.public_id}/test")
    assert response.status_code == 202, response.content
    [request] = receiver.requests
    assert request["json"]["type"] == "webhook.test" and request["verified_with"]
    assert request["json"]["data"]["endpoint"] == str(endpoint.public_id)


def test_deliveries_are_listed_newest_first_with_their_attempt_log(tenant_a, receiver, eager_tasks,
                                                                   django_capture_on_commit_callbacks):
    endpoint, _ = _endpoint(tenant_a, receiver.url, receiver=receiver)
    receiver.statuses = [500]
    with django_capture_on_commit_callbacks(execute=True):
        first = _emit(tenant_a)[0]
        second = _emit(tenant_a, reason="again")[0]
    page = tenant_a.api.get(f"/api/v1/webhooks/{endpoint.public_id}/deliveries").json()
    assert [d["id"] for d in page["results"]] == [str(second.public_id), str(first.public_id)]
    assert "count" not in page  # cursor pagination
    pending = tenant_a.api.get(f"/api/v1/webhooks/{endpoint.public_id}/deliveries?state=pending").json()
    assert [d["id"] for d in pending["results"]] == [str(first.public_id)]
    assert tenant_a.api.get(f"/api/v1/webhooks/{endpoint.public_id}/deliveries?state=nope").status_code == 400
    detail = tenant_a.api.get(f"/api/v1/webhooks/deliveries/{first.public_id}").json()
    assert detail["payload"]["id"] == detail["event_id"] == str(first.event_id)
    [attempt] = detail["attempt_log"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 500 and attempt["error"].startswith("HTTP 500")


def test_disabling_an_endpoint_gives_up_its_pending_deliveries(tenant_a):
    endpoint, _ = _endpoint(tenant_a, "https://example.com/in")
    [delivery] = _emit(tenant_a)
    response = tenant_a.api.patch(f"/api/v1/webhooks/{endpoint.public_id}", {"is_active": False}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is False
    gone = _fresh(delivery)
    assert gone.state == "failed" and "disabled" in gone.last_error
    assert _emit(tenant_a) == []
    redeliver = tenant_a.api.post(f"/api/v1/webhooks/deliveries/{delivery.public_id}/redeliver")
    assert redeliver.status_code == 409 and "enable it" in redeliver.json()["detail"]
    assert tenant_a.api.post(f"/api/v1/webhooks/{endpoint.public_id}/test").status_code == 409


def test_reads_need_read_and_changes_need_admin(tenant_a):
    endpoint, _ = _endpoint(tenant_a, "https://example.com/in")
    reader = tenant_a.client_with_scopes("read")
    assert reader.get("/api/v1/webhooks").status_code == 200
    assert reader.get(f"/api/v1/webhooks/{endpoint.public_id}/deliveries").status_code == 200
    for method, path, body in [("post", "/api/v1/webhooks", {"url": "https://example.com/x", "event_types": ["*"]}),
                               ("patch", f"/api/v1/webhooks/{endpoint.public_id}", {"description": "x"}),
                               ("delete", f"/api/v1/webhooks/{endpoint.public_id}", None),
                               ("post", f"/api/v1/webhooks/{endpoint.public_id}/rotate-secret", {}),
                               ("post", f"/api/v1/webhooks/{endpoint.public_id}/test", {})]:
        response = getattr(reader, method)(path, body, format="json")
        assert response.status_code == 403, (method, path, response.status_code)
        assert "'admin' scope" in response.json()["detail"]


def test_changes_are_audited_and_delete_removes_the_history(tenant_a):
    endpoint, _ = _endpoint(tenant_a, "https://example.com/in")
    _emit(tenant_a)
    tenant_a.api.patch(f"/api/v1/webhooks/{endpoint.public_id}", {"event_types": ["invoice.finalized"]},
                       format="json")
    assert tenant_a.api.delete(f"/api/v1/webhooks/{endpoint.public_id}").status_code == 204
    assert not WebhookDelivery.objects.exists()
    actions = set(AuditEvent.objects.filter(tenant=tenant_a.tenant).values_list("action", flat=True))
    assert {"webhook_endpoint.create", "webhook_endpoint.update", "webhook_endpoint.delete"} <= actions
    update = AuditEvent.objects.get(tenant=tenant_a.tenant, action="webhook_endpoint.update")
    assert update.changes == {"event_types": [["*"], ["invoice.finalized"]]}


def test_a_tenant_has_at_most_twenty_endpoints(tenant_a):
    for n in range(webhooks.MAX_ENDPOINTS_PER_TENANT):
        _endpoint(tenant_a, f"https://example.com/{n}")
    response = tenant_a.api.post("/api/v1/webhooks", {"url": "https://example.com/x", "event_types": ["*"]},
                                 format="json")
    assert response.status_code == 409 and "at most 20" in response.json()["detail"]


# --- emitted by the scheduler ---------------------------------------------------------------


def test_a_deployment_status_change_emits_an_event(tenant_a):
    from scheduler.services import deployment_pause

    _endpoint(tenant_a, "https://example.com/in", ["deployment.status_changed"])
    deployment = make_deployment(tenant_a, name="chat")
    deployment_pause(actor=system_actor(tenant_a.tenant), deployment=deployment)
    [delivery] = WebhookDelivery.objects.filter(event_type="deployment.status_changed")
    assert delivery.payload["data"] == {"deployment": str(deployment.public_id), "name": "chat", "from": "pending",
                                        "to": "paused", "reason": delivery.payload["data"]["reason"]}
    assert "Paused" in delivery.payload["data"]["reason"]


# --- claiming under concurrency -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_send_each_delivery_once(tenant_a, receiver):
    """Two workers sweeping at the same moment: every delivery is sent by exactly one of them.
    Runs on SQLite in the embedded pass and on PostgreSQL (SKIP LOCKED) in the services pass."""
    endpoint, _ = _endpoint(tenant_a, receiver.url, receiver=receiver)
    now = timezone.now()
    # Rows written directly: emitting here would commit at once and enqueue immediate attempts.
    deliveries = WebhookDelivery.objects.bulk_create([
        WebhookDelivery(tenant=tenant_a.tenant, endpoint=endpoint, event_id=f"00000000-0000-4000-8000-{n:012d}",
                        event_type="deployment.status_changed", payload={"id": str(n), "data": {}}, created_at=now,
                        next_attempt_at=now)
        for n in range(40)])
    receiver.delay = 0.02  # both sweeps are busy at once, whatever the scheduler does
    start, counts, errors = threading.Barrier(2), [], []

    def sweep():
        try:
            start.wait(timeout=10)
            counts.append(webhooks.webhook_deliveries_send_due())
        except Exception as error:  # reported below, with the thread's traceback lost but its message kept
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(counts) == len(deliveries)
    assert sorted(receiver.event_ids()) == sorted(str(d.event_id) for d in deliveries)  # each exactly once
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("succeeded", 1)}
    if settings.DATABASE_IS_POSTGRES:
        assert min(counts) > 0, f"one sweep did all the work ({counts}): they did not run side by side"


# --- console pages --------------------------------------------------------------------------


def _console(user, tenant) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_TENANT_KEY] = str(tenant.public_id)
    session.save()
    return client


def test_console_create_shows_the_secret_once(tenant_a):
    client = _console(tenant_a.owner, tenant_a.tenant)
    page = client.get(reverse("webhooks"))
    assert page.status_code == 200 and "Add an endpoint" in page.content.decode()
    response = client.post(reverse("webhooks"), {"url": "https://example.com/in", "description": "Slack",
                                                 "event_types": ["deployment.status_changed"]})
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(tenant=tenant_a.tenant)
    assert endpoint.secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    for url in (reverse("webhooks"), reverse("webhook-detail", args=[endpoint.public_id])):
        later = client.get(url)
        assert later.status_code == 200 and endpoint.secret not in later.content.decode()


def test_console_refuses_a_bad_url_beside_the_field(tenant_a):
    client = _console(tenant_a.owner, tenant_a.tenant)
    response = client.post(reverse("webhooks"), {"url": "ftp://example.com", "event_types": ["*"]})
    assert response.status_code == 200
    assert response.context["form"].errors["url"] == ["Use an http:// or https:// URL (https:// in production)."]
    assert not WebhookEndpoint.objects.exists()


def test_console_endpoint_page_lists_deliveries_and_redelivers(tenant_a, receiver, eager_tasks,
                                                               django_capture_on_commit_callbacks):
    endpoint, _ = _endpoint(tenant_a, receiver.url, receiver=receiver)
    [delivery] = _emit(tenant_a)  # not committed: pending, never attempted
    client = _console(tenant_a.owner, tenant_a.tenant)
    page = client.get(reverse("webhook-detail", args=[endpoint.public_id])).content.decode()
    assert str(delivery.event_id) in page and "Redeliver" in page and "0 succeeded · 1 pending" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("webhook-redeliver", args=[delivery.public_id]))
    assert response.status_code == 302
    assert response["Location"] == reverse("webhook-delivery", args=[delivery.public_id])
    assert receiver.event_ids() == [str(delivery.event_id)]
    detail = client.get(response["Location"])
    assert "HTTP 200" in detail.content.decode()
    assert json.loads(detail.context["payload"])["id"] == str(delivery.event_id)


def test_console_rotate_test_and_delete(tenant_a):
    endpoint, old = _endpoint(tenant_a, "https://example.com/in")
    client = _console(tenant_a.owner, tenant_a.tenant)
    rotated = client.post(reverse("webhook-rotate-secret", args=[endpoint.public_id]),
                          {"previous_secret_valid_hours": "24"})
    endpoint.refresh_from_db()
    assert rotated.status_code == 200 and endpoint.secret in rotated.content.decode()
    assert endpoint.previous_secret == old and "still signs until" in rotated.content.decode()
    tested = client.post(reverse("webhook-test", args=[endpoint.public_id]))
    test_delivery = WebhookDelivery.objects.get(event_type="webhook.test")
    assert tested["Location"] == reverse("webhook-delivery", args=[test_delivery.public_id])
    deleted = client.post(reverse("webhook-delete", args=[endpoint.public_id]))
    assert deleted["Location"] == reverse("webhooks")
    assert not WebhookEndpoint.objects.exists()


def test_console_edit_disables_an_endpoint(tenant_a):
    endpoint, _ = _endpoint(tenant_a, "https://example.com/in")
    client = _console(tenant_a.owner, tenant_a.tenant)
    response = client.post(reverse("webhook-detail", args=[endpoint.public_id]),
                           {"url": endpoint.url, "description": "", "event_types": ["*"]})  # "Active" unticked
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.is_active is False
    assert AuditEvent.objects.get(action="webhook_endpoint.update").changes == {"is_active": [True, False]}


def test_console_is_for_admins_to_change_and_the_navigation_shows_them(tenant_a):
    viewer = UserFactory()
    MembershipFactory(tenant=tenant_a.tenant, user=viewer, role=Role.VIEWER)
    viewer_client = _console(viewer, tenant_a.tenant)
    owner_client = _console(tenant_a.owner, tenant_a.tenant)
    assert 'href="/webhooks/"' in owner_client.get(reverse("console-home")).content.decode()
    assert 'href="/webhooks/"' not in viewer_client.get(reverse("console-home")).content.decode()
    looked = viewer_client.get(reverse("webhooks"))
    assert looked.status_code == 200 and "Add an endpoint" not in looked.content.decode()
    refused = viewer_client.post(reverse("webhooks"), {"url": "https://example.com/in", "event_types": ["*"]})
    assert refused.status_code == 403
    assert not WebhookEndpoint.objects.exists()


def test_console_pages_of_another_tenants_webhooks_are_404(tenant_a, tenant_b):
    endpoint, _ = _endpoint(tenant_b, "https://example.com/b")
    delivery = webhooks.webhook_endpoint_send_test(actor=system_actor(tenant_b.tenant), endpoint=endpoint)
    client = _console(tenant_a.owner, tenant_a.tenant)
    for name, value in [("webhook-detail", endpoint.public_id), ("webhook-delivery", delivery.public_id)]:
        assert client.get(reverse(name, args=[value])).status_code == 404
    for name, value in [("webhook-detail", endpoint.public_id), ("webhook-rotate-secret", endpoint.public_id),
                        ("webhook-test", endpoint.public_id), ("webhook-delete", endpoint.public_id),
                        ("webhook-redeliver", delivery.public_id)]:
        assert client.post(reverse(name, args=[value]), {"previous_secret_valid_hours": "0"}).status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.is_active and WebhookDelivery.objects.filter(pk=delivery.pk, attempts=0).exists()


# --- back office ----------------------------------------------------------------------------


def test_back_office_shows_endpoints_without_secrets_and_deliveries_read_only(tenant_a):
    endpoint, secret = _endpoint(tenant_a, "https://example.com/in")
    [delivery] = _emit(tenant_a)
    staff_user = UserFactory(is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(staff_user)
    for url in ("/admin/tenants/webhookendpoint/", f"/admin/tenants/webhookendpoint/{endpoint.pk}/change/",
                "/admin/tenants/webhookdelivery/", f"/admin/tenants/webhookdelivery/{delivery.pk}/change/"):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert secret not in response.content.decode()
    staff.post(f"/admin/tenants/webhookdelivery/{delivery.pk}/change/", {"state": "succeeded"})
    staff.post(f"/admin/tenants/webhookdelivery/{delivery.pk}/delete/", {"post": "yes"})
    assert _fresh(delivery).state == "pending"
    # Staff may disable an endpoint (through the service: audited, pending deliveries given up).
    response = staff.post(f"/admin/tenants/webhookendpoint/{endpoint.pk}/change/", {})  # "is_active" unticked
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.is_active is False and _fresh(delivery).state == "failed"
    audited = AuditEvent.objects.get(tenant=tenant_a.tenant, action="webhook_endpoint.update")
    assert audited.actor == staff_user.email and audited.changes == {"is_active": [True, False]}


def test_finished_deliveries_are_purged_after_thirty_days_and_pending_ones_kept(tenant_a):
    _endpoint(tenant_a, "https://example.com/in")
    old_done, old_failed, old_pending, recent_done = (_emit(tenant_a)[0] for _ in range(4))
    long_ago = timezone.now() - timedelta(days=31)
    WebhookDelivery.objects.filter(pk=old_done.pk).update(state="succeeded", created_at=long_ago)
    WebhookDelivery.objects.filter(pk=old_failed.pk).update(state="failed", created_at=long_ago)
    WebhookDelivery.objects.filter(pk=old_pending.pk).update(created_at=long_ago)
    WebhookDelivery.objects.filter(pk=recent_done.pk).update(state="succeeded")
    assert webhooks.webhook_delivery_purge() == 2
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {old_pending.pk, recent_done.pk}

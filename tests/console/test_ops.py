"""Operations endpoints: liveness, readiness, and who may read /metrics; Celery task counters."""

import socket

import pytest
from celery import shared_task
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from console.celery import app as celery_app
from console.tasks import ping_task
from tests.factories import UserFactory

OUTSIDER = "203.0.113.9"  # TEST-NET-3: in no allowed network


@shared_task(name="tests.console.failing_task")
def failing_task():
    raise ValueError("this task always fails")


@shared_task(name="tests.console.flaky_task", bind=True, max_retries=1)
def flaky_task(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "second time lucky"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _task_count(task: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("switchyard_celery_tasks_total", {"task": task, "outcome": outcome}) or 0.0


def test_healthz_answers_without_touching_anything():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"


def test_readyz_is_ready_when_database_and_broker_answer(db):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_with_the_reason_when_the_broker_is_unreachable(db, monkeypatch):
    monkeypatch.setitem(celery_app.conf, "broker_url", f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setitem(celery_app.conf, "broker_write_url", None)
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"
    assert "refused" in body["checks"]["broker"].lower()  # the reason, for whoever reads the probe


def test_metrics_are_forbidden_to_an_anonymous_outsider(db):
    response = Client(REMOTE_ADDR=OUTSIDER).get("/metrics")
    assert response.status_code == 403


def test_metrics_are_forbidden_to_a_non_staff_user_outside(tenant_a):
    client = Client(REMOTE_ADDR=OUTSIDER)
    client.force_login(tenant_a.owner)
    assert client.get("/metrics").status_code == 403


def test_metrics_answer_staff_from_anywhere(db):
    client = Client(REMOTE_ADDR=OUTSIDER)
    client.force_login(UserFactory(is_staff=True))
    assert client.get("/metrics").status_code == 200


def test_metrics_answer_loopback_with_request_counters(db):
    client = Client(REMOTE_ADDR="127.0.0.1")
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert "django_http_requests_total_by_method" in names
    assert "switchyard_celery_tasks" in names


def test_metrics_from_ipv6_loopback_are_allowed(db):
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200


def test_task_outcomes_are_counted_by_task_and_outcome():
    before = {
        "success": _task_count("console.tasks.ping_task", "success"),
        "failure": _task_count("tests.console.failing_task", "failure"),
        "retry": _task_count("tests.console.flaky_task", "retry"),
    }
    assert ping_task.apply(args=["x"]).get() == "pong:x"
    with pytest.raises(ValueError):
        failing_task.apply().get()
    flaky_task.apply()
    assert _task_count("console.tasks.ping_task", "success") == before["success"] + 1
    assert _task_count("tests.console.failing_task", "failure") == before["failure"] + 1
    assert _task_count("tests.console.flaky_task", "retry") == before["retry"] + 1

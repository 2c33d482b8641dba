"""The reconcile loop against the simulated fleet: lifecycle statuses, pause/resume/delete,
node drains and failures, the single-pass lock, idempotency, and (PostgreSQL) concurrent
worker processes that never double-book an accelerator."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from scheduler import services
from scheduler.estimator import Traffic
from scheduler.models import (
    Deployment,
    DeploymentEvent,
    Lease,
    Node,
    PlacementDecision,
    Replica,
)
from scheduler.reconcile import (
    COUNTERS_KEY,
    DESIRED_KEY,
    LEASE_NAME,
    RECONCILE_LOCK_KEY,
    ReplicaMetrics,
    counter_rate,
    fleet_driver,
    reconcile_pass,
    replica_metrics,
)
from tenants.context import system_actor, system_operator
from tests.cross_tenant_objects import make_deployment, small_fleet

START = datetime(2030, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=15)


@pytest.fixture
def fleet(settings, tmp_path):
    settings.SWITCHYARD_FLEET = {"driver": "simulated", "state_dir": str(tmp_path / "fleet"), "seed": 7,
                                 "tick_seconds": 5, "pending_seconds": 5, "engine_start_seconds": 10}
    return small_fleet(nodes=3)


class Clock:
    def __init__(self):
        self.now = START

    def run(self, django_capture_on_commit_callbacks, *, advance: timedelta = STEP):
        """One pass at the next instant; the driver calls made on commit are executed."""
        self.now += advance
        with django_capture_on_commit_callbacks(execute=True):
            return reconcile_pass(now=self.now)

    def until(self, capture, condition, *, passes: int = 40):
        for _ in range(passes):
            self.run(capture)
            if condition():
                return
        raise AssertionError("condition not reached")


@pytest.fixture
def clock():
    return Clock()


def _refresh(deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


def _holding(deployment=None):
    replicas = Replica.objects.filter(state__in=Replica.HOLDING_STATES)
    return replicas.filter(deployment=deployment) if deployment is not None else replicas


def _assert_no_node_overcommitted():
    for node in Node.objects.all():
        held = _holding().filter(node=node).aggregate(total=Sum("accelerators"))["total"] or 0
        assert held <= node.accelerators, f"{node.name}: {held} > {node.accelerators}"


def test_a_new_deployment_goes_pending_deploying_ready(tenant_a, fleet, clock, django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    assert deployment.status == "pending"

    report = clock.run(django_capture_on_commit_callbacks)
    assert report.ran and report.created == 1
    deployment = _refresh(deployment)
    assert deployment.status == "deploying"
    [replica] = _holding(deployment)
    assert replica.node in fleet and replica.tier.slug == "h100-80gb-on-demand"
    assert replica.generation == deployment.generation and replica.state == "pending"
    decision = PlacementDecision.objects.get(replica=replica)
    assert decision.hardware == "h100-80gb" and decision.accelerators == replica.accelerators
    assert decision.cost_per_hour > 0

    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    replica.refresh_from_db()
    assert replica.state == "ready" and replica.ready_at is not None and replica.endpoint
    kinds = set(DeploymentEvent.objects.filter(deployment=deployment).values_list("kind", flat=True))
    assert {"replicas.placed", "status.deploying", "status.ready"} <= kinds
    _assert_no_node_overcommitted()


def test_a_second_pass_with_nothing_changed_changes_nothing(tenant_a, fleet, clock,
                                                            django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")

    def snapshot():
        return (list(Replica.objects.order_by("pk").values_list("pk", "state", "node_id", "endpoint")),
                PlacementDecision.objects.count(), DeploymentEvent.objects.count(),
                list(Deployment.objects.values_list("pk", "status", "generation")))

    before = snapshot()
    report = clock.run(django_capture_on_commit_callbacks, advance=timedelta(0))
    assert report.ran and (report.created, report.retired, report.synced) == (0, 0, 0)
    assert snapshot() == before
    report = clock.run(django_capture_on_commit_callbacks)
    assert (report.created, report.retired) == (0, 0)
    assert snapshot() == before


def test_pausing_frees_the_accelerators_and_resuming_brings_them_back(tenant_a, fleet, clock,
                                                                       django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    actor = system_actor(tenant_a.tenant)

    services.deployment_pause(actor=actor, deployment=deployment)
    clock.until(django_capture_on_commit_callbacks, lambda: not _holding(deployment).exists())
    assert _refresh(deployment).status == "paused"
    assert Replica.objects.filter(deployment=deployment, state="stopped").count() == 1

    services.deployment_resume(actor=actor, deployment=deployment)
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    assert _holding(deployment).filter(state="ready").count() == 1


def test_deleting_drains_the_replicas_then_removes_the_deployment(tenant_a, fleet, clock,
                                                                  django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")

    services.deployment_delete(actor=system_actor(tenant_a.tenant), deployment=deployment)
    report = clock.run(django_capture_on_commit_callbacks)
    assert report.retired == 1 and Deployment.objects.filter(pk=deployment.pk).exists()
    assert _holding(deployment).get().state == "draining"
    clock.until(django_capture_on_commit_callbacks, lambda: not Deployment.objects.filter(pk=deployment.pk).exists())
    # Kept for usage and invoices, hidden from everything else; nothing holds accelerators.
    kept = Deployment.all_objects.get(pk=deployment.pk)
    assert kept.status == "deleted" and kept.deleted_at is not None
    assert not _holding(kept).exists()
    assert tenant_a.api.get(f"/api/v1/deployments/{kept.public_id}").status_code == 404

    # Its name and its model are free again.
    again = make_deployment(tenant_a, name=kept.name, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    assert again.pk != kept.pk
    services.deployment_delete(actor=system_actor(tenant_a.tenant), deployment=again)
    clock.until(django_capture_on_commit_callbacks, lambda: not Deployment.objects.filter(pk=again.pk).exists())
    services.model_delete(actor=system_actor(tenant_a.tenant), model=kept.model)
    assert Deployment.all_objects.get(pk=kept.pk).model is None


def test_draining_a_node_moves_its_replicas_and_cordons_it(tenant_a, fleet, clock,
                                                           django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    old = _holding(deployment).get()

    services.node_drain(operator=system_operator(), node=old.node)
    clock.run(django_capture_on_commit_callbacks)
    # New before old: the replacement is placed elsewhere while the old one keeps serving.
    replacement = _holding(deployment).exclude(pk=old.pk).get()
    assert replacement.node_id != old.node_id
    old.refresh_from_db()
    assert old.state == "ready"

    clock.until(django_capture_on_commit_callbacks,
                lambda: Node.objects.get(pk=old.node_id).state == "cordoned")
    old.refresh_from_db()
    assert old.state == "stopped"
    assert _holding(deployment).get().pk == replacement.pk
    assert _refresh(deployment).status == "ready"
    _assert_no_node_overcommitted()


def test_a_node_marked_down_has_its_replicas_rescheduled(tenant_a, fleet, clock,
                                                         django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    old = _holding(deployment).get()

    services.node_mark_down(operator=system_operator(), node=old.node)
    assert _refresh(deployment).status == "degraded"
    clock.run(django_capture_on_commit_callbacks)
    replacement = _holding(deployment).get()
    assert replacement.node_id != old.node_id
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    old.refresh_from_db()
    assert old.state == "failed"


def test_a_deployment_that_fits_nowhere_fails_with_the_reason(tenant_a, fleet, clock,
                                                              django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    for node in fleet:
        services.node_cordon(operator=system_operator(), node=node)
    report = clock.run(django_capture_on_commit_callbacks)
    deployment = _refresh(deployment)
    assert deployment.status == "failed" and str(deployment.public_id) in report.unserved
    event = DeploymentEvent.objects.filter(deployment=deployment, kind="status.failed").get()
    assert "h100-80gb" in event.message


def test_a_pass_while_the_lock_is_held_is_skipped(tenant_a, fleet, clock, django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    if connection.vendor == "postgresql":
        import psycopg

        db = settings.DATABASES["default"]
        other = psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                                password=db["PASSWORD"], dbname=db["NAME"], autocommit=True)
        other.execute("SELECT pg_advisory_lock(%s)", [RECONCILE_LOCK_KEY])
    else:
        other = None
        Lease.objects.update_or_create(name=LEASE_NAME, defaults={"holder": "another worker",
                                                                  "expires_at": datetime.now(UTC) + STEP})
    try:
        report = clock.run(django_capture_on_commit_callbacks)
    finally:
        if other is not None:
            # Unlock before closing: the server releases a closed session's locks asynchronously,
            # so the pass below could still find the lock held.
            other.execute("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK_KEY])
            other.close()
    assert not report.ran and report.skipped == "another pass is running"
    assert report.summary() == {"skipped": "another pass is running"}
    assert not Replica.objects.exists() and _refresh(deployment).status == "pending"

    if other is None:  # an expired lease is taken over
        Lease.objects.filter(name=LEASE_NAME).update(expires_at=datetime.now(UTC) - STEP)
    assert clock.run(django_capture_on_commit_callbacks).ran


def test_the_task_returns_a_summary(tenant_a, fleet, django_capture_on_commit_callbacks):
    from scheduler.tasks import reconcile_task

    make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    with django_capture_on_commit_callbacks(execute=True):
        summary = reconcile_task()
    assert summary["created"] == 1 and summary["unserved"] == 0


# --- request rate, traffic shares, scaling and rolls ---------------------------------------


def _traffic(requests_per_s: float) -> Traffic:
    return Traffic(requests_per_s=requests_per_s, input_tokens=512, output_tokens=256, input_tokens_p95=1024,
                   output_tokens_p95=512)


def _served(replica, now) -> float:
    """vllm:request_success_total of a replica, read from the simulated fleet at `now`."""
    return replica_metrics(fleet_driver(now).fetch_metrics(str(replica.public_id))).requests


def _observed_rate(deployment) -> float:
    """The request rate the last pass gave the autoscaler (its newest sample)."""
    return _refresh(deployment).scaler_state["samples"][-1][2]


def test_a_counter_gives_its_increase_per_second_and_survives_a_restart():
    rate, entry = counter_rate(None, 500.0, created=None, now=1000.0)
    assert rate is None and entry == [1000.0, 500.0, None]  # no baseline, an old server: no rate yet
    rate, entry = counter_rate(entry, 800.0, created=None, now=1015.0)
    assert rate == pytest.approx(20.0) and entry == [1015.0, 800.0, pytest.approx(20.0)]
    assert counter_rate(entry, 800.0, created=None, now=1015.0) == (pytest.approx(20.0), entry)  # same instant
    rate, entry = counter_rate(entry, 60.0, created=1010.0, now=1030.0)  # lower: the server restarted
    assert rate == pytest.approx(60.0 / 15)
    assert counter_rate(None, 90.0, created=1000.0, now=1030.0)[0] == pytest.approx(3.0)  # a fresh server
    assert counter_rate(["garbage"], 90.0, created=None, now=1030.0)[0] is None


def test_replica_metrics_sum_the_success_counter_over_its_labels():
    text = ('# TYPE vllm:request_success counter\n'
            'vllm:request_success_total{engine="0",finished_reason="stop"} 7.0\n'
            'vllm:request_success_created{engine="0",finished_reason="stop"} 100.0\n'
            'vllm:request_success_total{engine="0",finished_reason="length"} 3.0\n'
            'vllm:request_success_created{engine="0",finished_reason="length"} 100.0\n'
            '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 2.0\n'
            '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0"} 1.0\n')
    assert replica_metrics(text) == ReplicaMetrics(in_flight=3.0, requests=10.0, created=100.0)


def test_the_request_rate_comes_from_the_replicas_counters(tenant_a, fleet, clock,
                                                           django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"],
                                 traffic=_traffic(8))
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    rates = []
    for _ in range(12):
        clock.run(django_capture_on_commit_callbacks)
        rates.append(_observed_rate(deployment))
    [replica] = _holding(deployment)
    counter = _refresh(deployment).scaler_state[COUNTERS_KEY][str(replica.public_id)]
    assert counter[1] == _served(replica, clock.now)  # the value the pass read, kept for the next one
    assert sum(rates) / len(rates) == pytest.approx(8, rel=0.25)  # the simulator sends 8/s on average

    # A counter lower than the one kept: the server restarted, everything it counted is new.
    state = _refresh(deployment).scaler_state
    before = clock.now
    state[COUNTERS_KEY][str(replica.public_id)] = [before.timestamp(), 10.0 ** 9, None]
    Deployment.objects.filter(pk=deployment.pk).update(scaler_state=state)
    clock.run(django_capture_on_commit_callbacks)
    assert _observed_rate(deployment) == pytest.approx(_served(replica, clock.now) / STEP.total_seconds())


def test_a_new_replica_count_reshares_the_traffic_without_a_restart(tenant_a, fleet, clock,
                                                                   django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"],
                                 traffic=_traffic(16), min_replicas=1, max_replicas=1)
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    first = _holding(deployment).get()
    clock.run(django_capture_on_commit_callbacks, advance=timedelta(minutes=2))
    start, served_before = clock.now, _served(first, clock.now)
    clock.run(django_capture_on_commit_callbacks, advance=timedelta(minutes=2))
    alone = (_served(first, clock.now) - served_before) / 120
    assert alone == pytest.approx(16, rel=0.25)

    services.deployment_update(actor=system_actor(tenant_a.tenant), deployment=deployment,
                               min_replicas=2, max_replicas=2)
    clock.until(django_capture_on_commit_callbacks,
                lambda: _holding(deployment).filter(state="ready").count() == 2)
    clock.run(django_capture_on_commit_callbacks)
    mark = {r.pk: _served(r, clock.now) for r in _holding(deployment)}
    clock.run(django_capture_on_commit_callbacks, advance=timedelta(minutes=2))
    for replica in _holding(deployment):
        assert (_served(replica, clock.now) - mark[replica.pk]) / 120 == pytest.approx(8, rel=0.3)
    first.refresh_from_db()
    # The first replica kept serving through the change: same server, counter never reset.
    assert first.state == "ready" and _served(first, clock.now) > served_before > 0
    status = fleet_driver(clock.now).status(str(first.public_id))
    assert status.ready_at == first.ready_at and clock.now - start > timedelta(minutes=4)


def test_rising_traffic_scales_up_and_falling_traffic_scales_back_down(tenant_a, fleet, clock,
                                                                       django_capture_on_commit_callbacks):
    # No surge memory: this test is about the scale-down delay, not about holding a surge's level.
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"],
                                 traffic=_traffic(2), min_replicas=1, max_replicas=4,
                                 autoscaling={"surge_memory": 0})
    clock.until(django_capture_on_commit_callbacks, lambda: _refresh(deployment).status == "ready")
    for _ in range(4):
        clock.run(django_capture_on_commit_callbacks)
    assert _refresh(deployment).scaler_state[DESIRED_KEY] == 1 and _holding(deployment).count() == 1
    actor = system_actor(tenant_a.tenant)

    # 70 requests/s: more than two replicas serve (31 each by the performance model).
    services.deployment_update(actor=actor, deployment=deployment, traffic=_traffic(70))
    assert _refresh(deployment).generation == 1  # traffic alone is no new generation
    clock.until(django_capture_on_commit_callbacks,
                lambda: _holding(deployment).filter(state="ready").count() >= 3)
    assert _refresh(deployment).scaler_state[DESIRED_KEY] >= 3
    # Settled: the backlog queued during the ramp is served (for ~3 minutes the replicas complete
    # ~80/s), and every replica serves its share; nothing more is asked for.
    for _ in range(16):
        clock.run(django_capture_on_commit_callbacks)
    rates = []
    for _ in range(8):  # two minutes of beats: one bursty 15 s beat alone strays further
        clock.run(django_capture_on_commit_callbacks)
        rates.append(_observed_rate(deployment))
    peak = _holding(deployment).count()
    assert 3 <= peak <= 4 and _refresh(deployment).status == "ready"
    assert sum(rates) / len(rates) == pytest.approx(70, rel=0.2)
    _assert_no_node_overcommitted()

    services.deployment_update(actor=actor, deployment=deployment, traffic=_traffic(2))
    clock.run(django_capture_on_commit_callbacks)
    clock.run(django_capture_on_commit_callbacks)
    assert _holding(deployment).count() == peak  # not before the scale-down delay (60 s)
    clock.until(django_capture_on_commit_callbacks,
                lambda: _holding(deployment).count() == 1 and _refresh(deployment).scaler_state[DESIRED_KEY] == 1)
    assert _refresh(deployment).status == "ready"
    assert DeploymentEvent.objects.filter(deployment=deployment, kind="replicas.removed").exists()


def test_a_new_generation_rolls_one_replica_at_a_time_new_before_old(tenant_a, fleet, clock,
                                                                      django_capture_on_commit_callbacks):
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"],
                                 traffic=_traffic(6), min_replicas=3, max_replicas=3)
    clock.until(django_capture_on_commit_callbacks,
                lambda: _refresh(deployment).status == "ready" and _holding(deployment).count() == 3)
    old = set(_holding(deployment).values_list("pk", flat=True))

    deployment = services.deployment_update(actor=system_actor(tenant_a.tenant), deployment=deployment,
                                            tiers=["h100-80gb-reserved"])
    assert deployment.generation == 2
    seen_new = set()
    for _ in range(60):
        clock.run(django_capture_on_commit_callbacks)
        serving = _holding(deployment).exclude(state="draining")
        new = serving.filter(generation=2)
        seen_new |= set(new.values_list("pk", flat=True))
        # One at a time: at most one replica beyond the three, at most one new one not ready yet.
        assert serving.count() <= 3 + 1
        assert new.exclude(state="ready").count() <= 1
        # New before old: three replicas take requests throughout.
        assert serving.filter(state="ready").count() >= 3
        if not serving.filter(generation=1).exists() and new.filter(state="ready").count() == 3:
            break
    else:
        raise AssertionError("the roll did not finish")
    assert len(seen_new) == 3 and {r.tier.slug for r in new} == {"h100-80gb-reserved"}
    clock.until(django_capture_on_commit_callbacks, lambda: not _holding(deployment).filter(pk__in=old).exists())
    assert set(Replica.objects.filter(pk__in=old).values_list("state", flat=True)) == {"stopped"}
    assert _refresh(deployment).status == "ready" and _holding(deployment).count() == 3
    assert DeploymentEvent.objects.filter(deployment=deployment, kind="replicas.replaced").count() == 3


# --- defragmentation ------------------------------------------------------------------------


def _one_replica_per_node(tenant, fleet, clock, capture) -> list[Deployment]:
    """Three single-replica deployments, one on each node: while one is placed, the other nodes
    are cordoned (the solver alone would pack them onto one node)."""
    operator = system_operator()
    deployments = []
    for node in fleet:
        for other in Node.objects.filter(pk__in=[n.pk for n in fleet]):
            if other.pk != node.pk and other.state == "ready":
                services.node_cordon(operator=operator, node=other)
            elif other.pk == node.pk and other.state == "cordoned":
                services.node_uncordon(operator=operator, node=other)
        deployment = make_deployment(tenant, tiers=["h100-80gb-on-demand"], regions=["test-1"])
        clock.until(capture, lambda deployment=deployment: _refresh(deployment).status == "ready")
        deployments.append(deployment)
    for node in Node.objects.filter(state="cordoned"):
        services.node_uncordon(operator=operator, node=node)
    return deployments


def _nodes_in_use() -> set[int]:
    return set(_holding().values_list("node_id", flat=True))


def test_a_fragmented_fleet_is_consolidated_over_passes_within_the_rate_limit(
        tenant_a, fleet, clock, settings, django_capture_on_commit_callbacks):
    settings.SWITCHYARD_DEFRAG_MAX_MOVES = 0  # off while the fragmented fleet is made
    settings.SWITCHYARD_DEFRAG_INTERVAL_SECONDS = 60
    deployments = _one_replica_per_node(tenant_a, fleet, clock, django_capture_on_commit_callbacks)
    assert len(_nodes_in_use()) == 3
    for _ in range(6):  # off: nothing moves, however long
        assert clock.run(django_capture_on_commit_callbacks).moved == 0
    assert len(_nodes_in_use()) == 3

    settings.SWITCHYARD_DEFRAG_MAX_MOVES = 1
    moves_at = []
    for _ in range(40):
        report = clock.run(django_capture_on_commit_callbacks)
        assert report.moved <= 1
        if report.moved:
            moves_at.append(clock.now)
        # Make before break: every deployment keeps a ready replica throughout.
        for deployment in deployments:
            assert _holding(deployment).filter(state="ready").exists()
        _assert_no_node_overcommitted()
        if len(_nodes_in_use()) == 1 and not _holding().exclude(state="ready").exists():
            break
    else:
        raise AssertionError("the fleet was not consolidated")
    # Two moves pack three replicas onto one node; never two within one interval.
    assert len(moves_at) == 2 and moves_at[1] - moves_at[0] >= timedelta(seconds=60)
    moved = [d for d in deployments if DeploymentEvent.objects.filter(deployment=d, kind="replicas.moving").exists()]
    assert len(moved) == 2
    for deployment in moved:
        starting = DeploymentEvent.objects.get(deployment=deployment, kind="replicas.moving")
        finished = DeploymentEvent.objects.get(deployment=deployment, kind="replicas.moved")
        assert starting.message.startswith("defragmentation: ") and finished.message.startswith("defragmentation: ")
        replacement = Replica.objects.get(public_id=starting.data["replacement"])
        assert replacement.state == "ready"
        assert PlacementDecision.objects.get(replica=replacement).alternatives[0]["why"].startswith("defragmentation: ")
        assert Replica.objects.get(public_id=starting.data["replica"]).state == "stopped"
        assert _refresh(deployment).status == "ready" and _holding(deployment).count() == 1
        assert "defrag_moves" not in _refresh(deployment).scaler_state

    for _ in range(8):  # packed: nothing left to gain, nothing moves
        assert clock.run(django_capture_on_commit_callbacks).moved == 0


def test_a_move_whose_new_replica_fails_leaves_the_old_one_serving(tenant_a, fleet, clock, settings,
                                                                   django_capture_on_commit_callbacks):
    settings.SWITCHYARD_DEFRAG_MAX_MOVES = 0
    settings.SWITCHYARD_DEFRAG_INTERVAL_SECONDS = 60
    _one_replica_per_node(tenant_a, fleet, clock, django_capture_on_commit_callbacks)
    settings.SWITCHYARD_DEFRAG_MAX_MOVES = 1
    clock.until(django_capture_on_commit_callbacks, lambda: DeploymentEvent.objects.filter(
        kind="replicas.moving").exists())
    event = DeploymentEvent.objects.get(kind="replicas.moving")
    old = Replica.objects.get(public_id=event.data["replica"])
    Replica.objects.filter(public_id=event.data["replacement"]).update(state="failed")
    report = clock.run(django_capture_on_commit_callbacks)
    old.refresh_from_db()
    # The move is dropped: the old replica serves on as before, and no replacement is placed for it.
    assert old.state == "ready" and report.created == 0 and report.retired == 0
    assert "defrag_moves" not in _refresh(event.deployment).scaler_state


# --- concurrency (PostgreSQL) ---------------------------------------------------------------

WORKER = """
import json, os, sys
from datetime import datetime, timedelta, UTC
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
django.setup()
from django.conf import settings
settings.DATABASES["default"]["NAME"] = sys.argv[1]
settings.SWITCHYARD_FLEET = json.loads(sys.argv[2])
import contextlib
import scheduler.reconcile as reconcile
if sys.argv[5] == "bypass":  # every worker believes it holds the pass lock: only row locks protect
    reconcile.reconcile_lock = lambda: contextlib.nullcontext(True)
from scheduler.reconcile import reconcile_pass
start = datetime.fromisoformat(sys.argv[3])
ran = 0
for i in range(int(sys.argv[4])):
    ran += reconcile_pass(now=start + timedelta(seconds=5 * i)).ran
print(ran)
"""


@pytest.mark.postgres
@pytest.mark.parametrize("lock", ["advisory", "bypass"])
def test_concurrent_workers_never_double_book_an_accelerator(transactional_db, tenant_a, tmp_path, lock):
    import json

    from scheduler.services import catalog_sync

    catalog_sync()
    fleet_config = {"driver": "simulated", "state_dir": str(tmp_path / "fleet"), "seed": 7, "tick_seconds": 5,
                    "pending_seconds": 5, "engine_start_seconds": 10}
    nodes = small_fleet(nodes=2)  # 16 accelerators: not enough for everyone
    deployments = [make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"], min_replicas=1,
                                   max_replicas=6, name=f"chat-{n}") for n in range(8)]
    env = {**os.environ, "PYTHONPATH": str(Path(settings.BASE_DIR))}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, settings.DATABASES["default"]["NAME"],
                                 json.dumps(fleet_config), START.isoformat(), "12", lock],
                                cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(4)]
    ran = 0
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-3000:]
        ran += int(out.strip().splitlines()[-1])
    assert ran >= 1 if lock == "advisory" else ran == 4 * 12
    for node in Node.objects.filter(pk__in=[n.pk for n in nodes]):
        held = _holding().filter(node=node).aggregate(total=Sum("accelerators"))["total"] or 0
        assert held <= node.accelerators, f"{node.name}: {held} accelerators held of {node.accelerators}"
    placed = [d for d in deployments if _holding(d).exists()]
    assert placed, "no deployment was placed at all"
    if lock == "bypass":
        return  # racing planners may over-place a deployment (the next pass trims it), never a node
    for deployment in deployments:
        # No deployment double-placed: never more replicas than it may have, one decision each.
        replicas = _holding(deployment)
        assert replicas.count() <= deployment.max_replicas
        assert PlacementDecision.objects.filter(replica__deployment=deployment).count() == \
            Replica.objects.filter(deployment=deployment).count()

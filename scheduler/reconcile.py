"""The reconcile loop: make the fleet match the deployments, one idempotent pass at a time.

`reconcile_pass(now=…)` is the whole service (the Celery task only calls it). A pass:

1. takes the single-pass lock — PostgreSQL: a session-level `pg_try_advisory_lock`; SQLite: the
   `reconcile` row of `Lease`, claimed with a conditional UPDATE. Not acquired: the pass is
   skipped (another one is running), nothing is read or written;
2. syncs the driver's replica states into the Replica rows (and deletes driver replicas no
   row holds any more: orphans, failed ones, ones on nodes that went down);
3. stops the replicas of paused and deleting deployments (graceful: they drain) and marks
   a deleting deployment deleted (kept, hidden) once none of its replicas holds accelerators;
4. autoscales every other deployment (`scheduler.autoscaling.decide` on the in-flight requests
   and the request rate the replicas' counters give — see `counter_rate` — the policy, the
   budget cap) and turns the desired count into demand;
5. builds one placement problem (ready nodes and their free accelerators, every deployment's
   options within its tenant's quota, the replicas that may stay) and solves it;
6. applies the plan in one transaction, with row locks taken in the house order — nodes by id,
   then replicas, then deployments — re-checking each node's free accelerators under the lock
   before a replica row is written, so two passes can never over-commit a node even if the
   pass lock were bypassed. The driver is called only after the commit (`on_commit`);
7. rolls generations and drains nodes new-before-old, one replacement at a time (`ROLL_SURGE`):
   a replica of an old generation, or on a draining node, is retired only as its replacements
   become ready; a drained node becomes cordoned (`node_finish_drain`);
8. gives each replica its share of the deployment's traffic, re-applying the spec (no restart)
   of those whose share changed (`_share_traffic`);
9. defragments, rate-limited (`SWITCHYARD_DEFRAG_MAX_MOVES` moves at most once every
   `SWITCHYARD_DEFRAG_INTERVAL_SECONDS`): `placement.defragment` proposes moves of ready replicas
   of settled deployments; each move starts the new replica now and records the old one under
   `MOVES_KEY`, so later passes treat it like an old generation — retired only once its
   replacement is ready (make before break, step 7's machinery).

Every step derives what to do from the rows and the driver's report, so a pass that runs
twice, or after a crash half-way, converges to the same fleet.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Min, Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from scheduler import placement, selectors
from scheduler.autoscaling import ScalerState, Signals, decide, demand_rps
from scheduler.estimator import lognormal_p90
from scheduler.fleet.base import (
    LIVE_STATES,
    FleetDriver,
    FleetError,
    ReplicaSpec,
    ReplicaStatus,
    TrafficProfile,
    driver_from_settings,
    driver_kind,
)
from scheduler.models import (
    Deployment,
    HardwareTier,
    Lease,
    Node,
    PlacementDecision,
    Replica,
)
from scheduler.services import deployment_event_add, deployment_status_changed, node_finish_drain

logger = logging.getLogger(__name__)

# pg_try_advisory_lock key naming "the reconcile pass" (any bigint no other code uses).
RECONCILE_LOCK_KEY = 0x5359_5245_434F  # "SYREC O"
LEASE_NAME = "reconcile"
# A pass never outlives the task's hard time limit (console/celery.py: 300 s), so a lease
# left by a killed worker expires by the time the next pass could need it.
LEASE_SECONDS = 300

HOLDING = Replica.HOLDING_STATES
ACTIVE_STATUSES = (Deployment.Status.PENDING, Deployment.Status.DEPLOYING, Deployment.Status.READY,
                   Deployment.Status.DEGRADED, Deployment.Status.FAILED)
STOPPING_STATUSES = (Deployment.Status.PAUSED, Deployment.Status.DELETING)
COLD_START_HISTORY = timedelta(days=1)  # how far back replica start-up times inform the autoscaler
IN_FLIGHT_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")
REQUEST_COUNTER = "vllm:request_success"  # the family of vllm:request_success_total{finished_reason=…}
# A counter seen for the first time gives a rate only if its server started this recently
# (`_created`): a day-old counter's lifetime average says nothing about the last minute.
FIRST_RATE_MAX_AGE_SECONDS = 600.0
# Replacements (generation rolls, node drains) in flight per deployment beyond its desired
# count: one at a time, each old replica retired only once a new one is ready.
ROLL_SURGE = 1
# What the reconcile loop keeps in Deployment.scaler_state beside the autoscaler's own state.
COUNTERS_KEY = "request_counters"  # replica public id → [time, counter, rate or None]
TRAFFIC_KEY = "traffic_shares"  # replica public id → requests/s last given to the driver
TOKENS_KEY = "traffic_tokens"  # the token figures those profiles carried
DESIRED_KEY = "desired"  # the replica count the last pass asked for
MOVES_KEY = "defrag_moves"  # old replica public id → its replacement's, while a defragmentation move runs
RECONCILE_KEYS = (COUNTERS_KEY, TRAFFIC_KEY, TOKENS_KEY, DESIRED_KEY, MOVES_KEY)
# The Lease row whose expiry is the earliest time of the next defragmentation step (the rate limit).
DEFRAG_LEASE = "defragmentation"


@dataclass
class ReconcileReport:
    """What one pass did. `skipped` is non-empty when it did nothing (and says why)."""

    skipped: str = ""
    synced: int = 0  # replica rows whose state the driver's report changed
    created: int = 0  # replicas placed
    retired: int = 0  # replicas asked to drain (scale-down, rollout, drain, pause, delete)
    moved: int = 0  # defragmentation moves started (new replica placed; the old one drains once it serves)
    orphans_deleted: int = 0
    deployments_deleted: int = 0
    nodes_drained: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # deployment public id → status after the pass
    unserved: dict[str, str] = field(default_factory=dict)  # deployment public id → why
    notes: list[str] = field(default_factory=list)  # what the pass could not do, for the log

    @property
    def ran(self) -> bool:
        return not self.skipped

    def summary(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        return {"synced": self.synced, "created": self.created, "retired": self.retired, "moved": self.moved,
                "orphans_deleted": self.orphans_deleted, "deployments_deleted": self.deployments_deleted,
                "nodes_drained": self.nodes_drained, "unserved": len(self.unserved), "notes": self.notes[:10]}


# --- the single-pass lock -------------------------------------------------------------------


def lease_claim(*, name: str, holder: str, seconds: float) -> bool:
    """Claim the lease `name` for `seconds` if nobody holds it (or its holder's time ran out).
    A conditional UPDATE that must change exactly one row, so two claimants cannot both win."""
    now = timezone.now()
    try:
        with transaction.atomic():
            Lease.objects.get_or_create(name=name, defaults={"expires_at": now - timedelta(seconds=1)})
    except IntegrityError:
        pass  # another claimant created the row first: the UPDATE below decides between us
    claimed = Lease.objects.filter(name=name, expires_at__lt=now).update(
        holder=holder, expires_at=now + timedelta(seconds=seconds))
    return claimed == 1


def lease_release(*, name: str, holder: str) -> None:
    """Give the lease back early; only its holder can (a later holder's claim stays)."""
    Lease.objects.filter(name=name, holder=holder).update(expires_at=timezone.now() - timedelta(seconds=1))


@contextmanager
def reconcile_lock() -> Iterator[bool]:
    """Yields True when this process may run a pass. PostgreSQL: a session-level advisory
    lock (released in `finally`, and by the server if the connection dies). Elsewhere: the
    `reconcile` lease, which expires by itself if its holder dies."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [RECONCILE_LOCK_KEY])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK_KEY])
        return
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    acquired = lease_claim(name=LEASE_NAME, holder=holder, seconds=LEASE_SECONDS)
    try:
        yield acquired
    finally:
        if acquired:
            lease_release(name=LEASE_NAME, holder=holder)


# --- the driver -----------------------------------------------------------------------------


def fleet_driver(now: datetime | None = None) -> FleetDriver:
    """The driver of `settings.SWITCHYARD_FLEET`. With `now`, the simulated fleet's clock is
    pinned to it (tests and replays pass time explicitly; the twin never goes back in time)."""
    config = settings.SWITCHYARD_FLEET
    overrides = {}
    if now is not None and driver_kind(config) == "simulated":
        epoch = now.timestamp()
        overrides["clock"] = lambda: epoch
    return driver_from_settings(config, **overrides)


def in_flight_from_metrics(text: str) -> float:
    """Running + waiting requests in a vLLM /metrics text (summed over engines)."""
    return replica_metrics(text).in_flight


@dataclass(frozen=True)
class ReplicaMetrics:
    in_flight: float  # running + waiting requests
    requests: float  # vllm:request_success_total summed over its labels (finished_reason, engine)
    created: float | None  # epoch seconds the counter started (its `_created`), if exposed


def replica_metrics(text: str) -> ReplicaMetrics:
    """What the reconcile loop reads from a vLLM /metrics text. ValueError if it is not one."""
    in_flight = requests = 0.0
    created = None
    # By sample name: the parser files `_created` (and `_total` under a `# TYPE x counter`
    # without the suffix) as families of their own.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in IN_FLIGHT_METRICS:
                in_flight += sample.value
            elif sample.name == f"{REQUEST_COUNTER}_total":
                requests += sample.value
            elif sample.name == f"{REQUEST_COUNTER}_created":
                created = sample.value if created is None else min(created, sample.value)
    return ReplicaMetrics(in_flight, requests, created)


def counter_rate(previous: list | None, value: float, created: float | None, now: float) -> tuple[float | None, list]:
    """Requests/s from a monotonic counter read at `now`, and the entry to keep for next time.

    `previous` is the entry the last read left ([time, counter, rate]). The rate is the
    increase ÷ the time since; a counter below the last value means the server restarted,
    so the whole new value is the increase. Read again at the same instant, the last rate
    stands. A first read gives a rate only when the counter's `created` time is recent
    (value ÷ its age); otherwise None: the next read has a baseline."""
    if previous is not None:
        try:
            then, before, last_rate = float(previous[0]), float(previous[1]), previous[2]
        except (TypeError, ValueError, IndexError):
            previous = None  # an entry this code did not write: start again
    if previous is not None:
        elapsed = now - then
        if elapsed <= 0:
            return last_rate, previous
        increase = value - before if value >= before else value
        rate = increase / elapsed
        return rate, [now, value, rate]
    rate = None
    if created is not None and 0 < now - created <= FIRST_RATE_MAX_AGE_SECONDS:
        rate = value / (now - created)
    return rate, [now, value, rate]


# --- the pass -------------------------------------------------------------------------------


def reconcile_pass(*, now: datetime | None = None, driver: FleetDriver | None = None) -> ReconcileReport:
    """One idempotent reconcile pass (see the module docstring). Skipped, with the reason in
    the report, when another pass holds the lock."""
    now = now or timezone.now()
    with reconcile_lock() as acquired:
        if not acquired:
            return ReconcileReport(skipped="another pass is running")
        return _Pass(now=now, driver=driver or fleet_driver(now)).run()


@dataclass
class _Want:
    """One active deployment's part of the problem, and what the pass will do for it."""

    deployment: Deployment
    options: list[selectors.PlacementOption]
    desired: int
    movable: list[Replica]  # current generation on a ready node: the solver may keep or drop them
    pinned: list[Replica]  # current generation on a cordoned node: kept as they are
    retiring: list[Replica]  # old generation or on a draining node: replaced, then retired
    scaler_state: dict
    unserved: str = ""
    placing: int = 0  # current-generation replicas to place now: `desired`, less during a roll
    moving: dict[str, str] = field(default_factory=dict)  # defragmentation moves under way: old → new public id


class _Pass:
    def __init__(self, *, now: datetime, driver: FleetDriver):
        self.now = now
        self.driver = driver
        self.report = ReconcileReport()
        self._hardware: dict[int, str] = {}  # accelerator type id → slug
        self._node_ids: dict[str, int] = {}  # node name → pk, for the nodes the solver saw
        self._created_shares: dict[int, float] = {}  # replica pk → requests/s it is created with
        self._problem: placement.Problem | None = None  # what the pass solved
        self._cold_start_seconds: dict[int, float] | None = None  # deployment pk → seconds, per pass

    def _cold_starts(self) -> dict[int, float]:
        """Per deployment, the mean seconds its replicas that became ready in the last day took
        from being placed to ready: the autoscaler's look-ahead, as this fleet really behaves.
        One query per pass."""
        if self._cold_start_seconds is None:
            took: dict[int, list[float]] = defaultdict(list)
            rows = (Replica.objects.filter(ready_at__gte=self.now - COLD_START_HISTORY)
                    .values_list("deployment_id", "created_at", "ready_at"))
            for deployment_id, created_at, ready_at in rows:
                took[deployment_id].append(max(0.0, (ready_at - created_at).total_seconds()))
            self._cold_start_seconds = {pk: sum(seconds) / len(seconds) for pk, seconds in took.items()}
        return self._cold_start_seconds

    def run(self) -> ReconcileReport:
        self.driver.advance(self.now)
        statuses = {status.replica_id: status for status in self.driver.list_replicas()}
        self._sync(statuses)
        deployments = list(Deployment.objects.select_related("model").prefetch_related("regions")
                           .order_by("pk"))
        for deployment in deployments:
            if deployment.status in STOPPING_STATUSES:
                self._stop(deployment)
        wants = [self._want(d) for d in deployments if d.status in ACTIVE_STATUSES]
        plan = self._solve(wants)
        self._apply(wants, plan)
        self._defragment(wants)
        self._finish_drains()
        return self.report

    # -- 2. the driver's report → rows

    def _sync(self, statuses: dict[str, ReplicaStatus]) -> None:
        reapply: list[Replica] = []
        to_delete: list[str] = []
        failed: dict[int, list[tuple[Replica, str]]] = defaultdict(list)
        with transaction.atomic():
            rows = list(Replica.objects.select_for_update().filter(state__in=HOLDING).order_by("pk"))
            holding_ids = set()
            for row in rows:
                status = statuses.get(str(row.public_id))
                if status is None:
                    if row.state == Replica.State.PENDING:
                        reapply.append(row)  # the driver never got it (a crash before on_commit ran)
                        holding_ids.add(str(row.public_id))
                        continue
                    status = ReplicaStatus(replica_id=str(row.public_id), state="stopped", message="gone")
                if row.state == Replica.State.DRAINING and status.state in ("pending", "starting", "ready"):
                    to_delete.append(status.replica_id)  # asked to drain but the request was lost: ask again
                    holding_ids.add(status.replica_id)
                    continue
                if self._write_status(row, status):
                    self.report.synced += 1
                if row.state in HOLDING:
                    holding_ids.add(str(row.public_id))
                if row.state == Replica.State.FAILED:
                    failed[row.deployment_id].append((row, status.message))
                    to_delete.append(str(row.public_id))
            for deployment in Deployment.objects.select_for_update().filter(pk__in=failed).order_by("pk"):
                lost = failed[deployment.pk]
                deployment_event_add(deployment=deployment, kind="replica.failed",
                                     message=f"{len(lost)} replica(s) failed ({lost[0][1] or 'no reason given'}); "
                                             f"replacements will be placed.",
                                     data={"replicas": [str(r.public_id) for r, _ in lost]})
        for status in statuses.values():
            if status.state in LIVE_STATES and status.state != "draining" and status.replica_id not in holding_ids:
                to_delete.append(status.replica_id)
                self.report.orphans_deleted += 1
        for replica_id in dict.fromkeys(to_delete):
            self._driver_delete(replica_id)
        for row in reapply:
            self._driver_create(row.pk)

    def _write_status(self, row: Replica, status: ReplicaStatus) -> bool:
        changed = []
        if status.state != row.state and not (row.state == Replica.State.DRAINING and status.state == "ready"):
            row.state = status.state
            changed.append("state")
        if row.started_at is None and status.started_at is not None:
            row.started_at = status.started_at
            changed.append("started_at")
        if row.ready_at is None and status.ready_at is not None:
            row.ready_at = status.ready_at
            changed.append("ready_at")
        if status.endpoint != row.endpoint and row.state in ("ready", "draining"):
            row.endpoint = status.endpoint
            changed.append("endpoint")
        if row.state in ("stopped", "failed") and row.stopped_at is None:
            row.stopped_at, row.endpoint = self.now, ""
            changed += ["stopped_at", "endpoint"]
        if changed:
            row.save(update_fields=list(dict.fromkeys(changed)))
        return "state" in changed

    # -- 3. paused and deleting deployments

    def _stop(self, deployment: Deployment) -> None:
        with transaction.atomic():
            replicas = list(Replica.objects.select_for_update()
                            .filter(deployment=deployment, state__in=HOLDING).order_by("pk"))
            deployment = Deployment.objects.select_for_update().filter(pk=deployment.pk).first()
            if deployment is None or deployment.status not in STOPPING_STATUSES:
                return  # resumed (or gone) since it was read: the next pass places it
            to_stop = [r for r in replicas if r.state != Replica.State.DRAINING]
            self._retire(to_stop)
            if to_stop:
                deployment_event_add(deployment=deployment, kind="replicas.stopping",
                                     message=f"{len(to_stop)} replica(s) draining: the deployment is "
                                             f"{deployment.status}.",
                                     data={"replicas": [str(r.public_id) for r in to_stop]})
            if deployment.status == Deployment.Status.DELETING and not replicas:
                # The row stays, hidden, with its stopped replicas: usage and invoices refer to them.
                deployment_status_changed(deployment=deployment, old=deployment.status, new=Deployment.Status.DELETED,
                                          reason="Deleted: every replica has stopped.")
                deployment.status, deployment.deleted_at = Deployment.Status.DELETED, timezone.now()
                deployment.save(update_fields=["status", "deleted_at"])
                deployment_event_add(deployment=deployment, kind="deleted",
                                     message="Deleted: every replica has stopped.")
                self.report.deployments_deleted += 1
                return
            self.report.statuses[str(deployment.public_id)] = deployment.status

    def _retire(self, replicas: list[Replica]) -> None:
        """Ask the driver to drain `replicas` (locked rows) after the commit; they hold their
        accelerators until the driver reports them stopped."""
        for replica in replicas:
            replica.state = Replica.State.DRAINING
            replica.save(update_fields=["state"])
            replica_id = str(replica.public_id)
            transaction.on_commit(lambda replica_id=replica_id: self._driver_delete(replica_id))
        self.report.retired += len(replicas)

    # -- 4. autoscaling

    def _want(self, deployment: Deployment) -> _Want:
        replicas = list(Replica.objects.filter(deployment=deployment, state__in=HOLDING)
                        .exclude(state=Replica.State.DRAINING).select_related("node").order_by("pk"))
        scaler_state = deployment.scaler_state if isinstance(deployment.scaler_state, dict) else {}
        moving = _moves_under_way(scaler_state.get(MOVES_KEY), {str(r.public_id) for r in replicas})
        movable, pinned, retiring = [], [], []
        for replica in replicas:
            if replica.generation != deployment.generation or replica.node.state != Node.State.READY \
                    and replica.node.state != Node.State.CORDONED or str(replica.public_id) in moving:
                retiring.append(replica)  # a defragmentation move's old replica retires like an old generation
            elif replica.node.state == Node.State.CORDONED:
                pinned.append(replica)
            else:
                movable.append(replica)
        options = self._options_within_quota(deployment)
        want = _Want(deployment, options, 0, movable, pinned, retiring, deployment.scaler_state, moving=moving)
        if not options:
            want.unserved = ("no allowed tier can take a replica: its hardware tiers are inactive or the tenant's "
                             "accelerator quota on them is used up")
            return want
        primary = self._primary_option(want)
        current_new = movable + pinned
        ready_new = [r for r in current_new if r.state == Replica.State.READY]
        starting_new = [r for r in current_new if r.state in (Replica.State.PENDING, Replica.State.STARTING)]
        ready_old = [r for r in retiring if r.state == Replica.State.READY]
        ready = ready_new + ready_old
        in_flight, request_rate, counters = self._observe(deployment, ready, scaler_state.get(COUNTERS_KEY))
        if not ready:
            # Until a replica serves there is nothing to observe: the expected traffic stands in.
            request_rate = deployment.requests_per_s
        # During a roll or a drain the old replicas and their replacements are one set of
        # slots: an old ready replica counts while the count asked for last lacks a new one
        # ready, and a starting replacement does not count beside the old one it replaces.
        last_desired = scaler_state.get(DESIRED_KEY)
        counted_ready, counted_starting = len(ready), len(starting_new)
        if retiring and isinstance(last_desired, int):
            standing_old = min(len(ready_old), max(0, last_desired - len(ready_new)))
            counted_ready = len(ready_new) + standing_old
            counted_starting = min(len(starting_new), max(0, last_desired - counted_ready))
        signals = Signals(in_flight=in_flight, request_rate=request_rate, ready_replicas=counted_ready,
                          starting_replicas=counted_starting)
        try:
            state = ScalerState.from_dict({k: v for k, v in scaler_state.items() if k not in RECONCILE_KEYS})
        except ValueError as error:
            logger.warning("deployment %s: scaler state reset (%s)", deployment.public_id, error)
            state = ScalerState()
        # In-flight requests one replica carries within the SLO: its throughput × the time a
        # typical request takes there (Little's law).
        seconds = (primary["ttft_p95_ms"] + primary["tpot_p95_ms"] * deployment.output_tokens) / 1000
        capacity = max(1.0, primary["rps_per_replica"] * seconds)
        decision = decide(deployment.policy(), signals, state, capacity_per_replica=capacity,
                          min_replicas=deployment.min_replicas, max_replicas=deployment.max_replicas,
                          now=self.now.timestamp(), budget_cap=deployment.budget_replica_cap,
                          ttft_slo_ms=deployment.slo_ttft_p95_ms, rps_per_replica=primary["rps_per_replica"],
                          cold_start_seconds=self._cold_starts().get(deployment.pk))
        want.desired = want.placing = decision.desired_replicas
        if retiring:
            # One replacement at a time: the old ready replicas that still stand in for missing
            # new ones, plus the new ones, stay within desired + ROLL_SURGE.
            standing_old = min(len(ready_old), max(0, want.desired - len(ready_new)))
            want.placing = min(want.desired, max(len(current_new), want.desired + ROLL_SURGE - standing_old))
        want.scaler_state = {**decision.state.to_dict(), COUNTERS_KEY: counters, DESIRED_KEY: want.desired,
                             **{key: scaler_state[key] for key in (TRAFFIC_KEY, TOKENS_KEY) if key in scaler_state},
                             **({MOVES_KEY: moving} if moving else {})}
        return want

    def _observe(self, deployment: Deployment, ready: list[Replica], counters) -> tuple[float, float, dict]:
        """In-flight requests and arrivals/s over the ready replicas, from their metrics, and the
        request counters to keep (only the replicas read now: a replica gone leaves no entry).
        A replica whose counter gives no rate yet is assumed to receive what the others do."""
        counters = counters if isinstance(counters, dict) else {}
        kept: dict[str, list] = {}
        in_flight = rate = 0.0
        measured = 0
        for replica in ready:
            replica_id = str(replica.public_id)
            try:
                sample = replica_metrics(self.driver.fetch_metrics(replica_id))
            except (FleetError, ValueError) as error:
                self.report.notes.append(f"metrics of replica {replica_id}: {error}")
                continue
            in_flight += sample.in_flight
            replica_rate, kept[replica_id] = counter_rate(counters.get(replica_id), sample.requests, sample.created,
                                                          self.now.timestamp())
            if replica_rate is not None:
                rate += replica_rate
                measured += 1
        if measured:
            rate *= len(ready) / measured
        return in_flight, rate, kept

    def _options_within_quota(self, deployment: Deployment) -> list[selectors.PlacementOption]:
        """The deployment's options on tiers where its tenant could hold one more replica, not
        counting what the deployment itself holds (the solver may move or keep those)."""
        quota = selectors.tenant_quota_for(deployment.tenant)
        in_use = selectors.tenant_accelerators_in_use(deployment.tenant)
        own = dict(Replica.objects.filter(deployment=deployment, state__in=HOLDING).values("tier__slug")
                   .annotate(total=Sum("accelerators")).values_list("tier__slug", "total").order_by())
        return [option for option in selectors.deployment_placement_options(deployment)
                if quota.get(option.tier, 0) - in_use.get(option.tier, 0) + own.get(option.tier, 0)
                >= option.accelerators]

    def _primary_option(self, want: _Want) -> dict:
        """The replica option the autoscaler counts in: the shape most current replicas have,
        else the cheapest per request/s."""
        by_shape = {(o["hardware"], o["accelerators"]): o for o in want.deployment.replica_options}
        allowed = [by_shape[(o.hardware, o.accelerators)] for o in want.options
                   if (o.hardware, o.accelerators) in by_shape]
        shapes = Counter((self._hardware_of(r), r.accelerators) for r in want.movable + want.pinned)
        for shape, _count in shapes.most_common():
            if shape in by_shape and by_shape[shape] in allowed:
                return by_shape[shape]
        prices = {(o.hardware, o.accelerators): o.price_per_accelerator_hour for o in want.options}
        return min(allowed, key=lambda o: (prices[(o["hardware"], o["accelerators"])] * o["accelerators"]
                                           / Decimal(str(o["rps_per_replica"])), o["hardware"]))

    # -- 5. the placement problem

    def _solve(self, wants: list[_Want]) -> placement.Plan | None:
        nodes = list(selectors.node_free_accelerators(Node.objects.filter(state=Node.State.READY))
                     .select_related("zone__region", "accelerator").order_by("pk"))
        prices = dict(HardwareTier.objects.filter(active=True).values("accelerator__slug")
                      .annotate(price=Min("price_per_accelerator_hour")).values_list("accelerator__slug", "price"))
        for want in wants:
            for option in want.options:
                prices[option.hardware] = min(prices.get(option.hardware, option.price_per_accelerator_hour),
                                              option.price_per_accelerator_hour)
        problem_nodes = tuple(placement.Node(id=node.name, region=node.zone.region.slug, zone=node.zone.slug,
                                             hardware=node.accelerator.slug,
                                             # Not counting what current replicas hold (DESIGN): the
                                             # movable ones are listed in `current`, the rest stay put.
                                             free_accelerators=max(0, node.free_accelerators))
                              for node in nodes)
        hardware = {node.hardware for node in problem_nodes} | {o.hardware for w in wants for o in w.options}
        deployments, current = [], []
        for want in wants:
            if want.unserved:
                continue
            d = want.deployment
            kept = len(want.pinned)
            cap = d.max_replicas if d.budget_replica_cap is None else min(d.max_replicas, d.budget_replica_cap)
            remaining = max(0, want.placing - kept)
            if remaining == 0 and not want.movable:
                continue
            if want.retiring:  # a roll or a drain: never more new replicas than `placing`
                cap = min(cap, want.placing)
            primary = self._primary_option(want)
            deployments.append(placement.Deployment(
                id=str(d.pk), demand_rps=demand_rps(remaining, primary["rps_per_replica"]),
                min_replicas=max(0, min(d.min_replicas, want.placing) - kept),
                max_replicas=max(1, cap - kept), regions=tuple(sorted(r.slug for r in d.regions.all())),
                max_replicas_per_node=max(1, cap), priority=d.priority,
                options=tuple(placement.Option(o.hardware, o.accelerators, o.rps_per_replica) for o in want.options)))
            current += [placement.Replica(str(d.pk), r.node.name, self._hardware_of(r), r.accelerators)
                        for r in want.movable]
        if not deployments:
            return None
        self._node_ids = {node.name: node.pk for node in nodes}
        problem = placement.Problem(
            hardware=tuple(placement.HardwareType(name, Decimal(prices.get(name, 0))) for name in sorted(hardware)),
            nodes=problem_nodes, deployments=tuple(deployments), current=tuple(current))
        self._problem = problem
        return placement.solve(problem)

    def _hardware_of(self, replica: Replica) -> str:
        accelerator_id = replica.node.accelerator_id
        if accelerator_id not in self._hardware:
            self._hardware[accelerator_id] = replica.node.accelerator.slug
        return self._hardware[accelerator_id]

    # -- 6. applying the plan

    def _apply(self, wants: list[_Want], plan: placement.Plan | None) -> None:
        planned: dict[str, list[placement.Replica]] = defaultdict(list)
        unserved, decisions = {}, {}
        if plan is not None:
            for replica in plan.replicas:
                planned[replica.deployment].append(replica)
            unserved = {u.deployment: u.reason for u in plan.unserved}
            decisions = {d.deployment: d for d in plan.decisions}
        creations: list[tuple[_Want, placement.Replica]] = []
        removals: dict[int, list[Replica]] = {}
        for want in wants:
            key = str(want.deployment.pk)
            if want.unserved:
                continue  # not in the problem (no option it may use): what it runs stays
            left = Counter((r.node.name, r.accelerators) for r in want.movable)
            for replica in planned.get(key, []):
                if left[(replica.node, replica.accelerators)] > 0:
                    left[(replica.node, replica.accelerators)] -= 1
                else:
                    creations.append((want, replica))
            dropped = []
            for r in want.movable:
                if left[(r.node.name, r.accelerators)] > 0:
                    left[(r.node.name, r.accelerators)] -= 1
                    dropped.append(r)
            removals[want.deployment.pk] = dropped
            if key in unserved:
                want.unserved = unserved[key]
        node_pks = sorted({self._node_ids[replica.node] for _, replica in creations})
        deployment_pks = sorted(want.deployment.pk for want in wants)
        with transaction.atomic():
            # Locks in the house order: nodes by id, then replicas, then deployments.
            nodes = {node.pk: node for node in Node.objects.select_for_update().filter(pk__in=node_pks)
                     .select_related("accelerator", "zone__region").order_by("pk")}
            held = dict(Replica.objects.filter(node_id__in=node_pks, state__in=HOLDING).values("node_id")
                        .annotate(total=Sum("accelerators")).values_list("node_id", "total").order_by())
            locked = {r.pk: r for r in Replica.objects.select_for_update()
                      .filter(deployment_id__in=deployment_pks, state__in=HOLDING).order_by("pk")}
            current = {d.pk: d for d in Deployment.objects.select_for_update(of=("self",)).filter(pk__in=deployment_pks)
                       .select_related("model", "tenant").order_by("pk")}
            created_by: dict[int, list[Replica]] = defaultdict(list)
            for want, planned_replica in creations:
                d = current.get(want.deployment.pk)
                if d is None or d.status not in ACTIVE_STATUSES or d.generation != want.deployment.generation:
                    continue  # changed since it was read: the next pass plans it again
                node = nodes[self._node_ids[planned_replica.node]]
                free = node.accelerators - held.get(node.pk, 0)
                if node.state != Node.State.READY or free < planned_replica.accelerators:
                    self.report.notes.append(f"{node.name}: {free} accelerators free under the lock, "
                                             f"{planned_replica.accelerators} planned; not placed")
                    continue
                option = next(o for o in want.options if o.hardware == planned_replica.hardware
                              and o.accelerators == planned_replica.accelerators)
                if not self._within_quota(d, option, created_by):
                    self.report.notes.append(f"deployment {d.public_id}: tenant quota on {option.tier} reached")
                    continue
                held[node.pk] = held.get(node.pk, 0) + planned_replica.accelerators
                created_by[d.pk].append(self._create(d, node, option, decisions.get(str(d.pk))))
            for want in wants:
                d = current.get(want.deployment.pk)
                if d is None:
                    continue
                self._settle(want, d, locked, removals.get(d.pk, []), created_by.get(d.pk, []))

    def _within_quota(self, deployment: Deployment, option, created_by) -> bool:
        quota = selectors.tenant_quota_for(deployment.tenant).get(option.tier, 0)
        in_use = selectors.tenant_accelerators_in_use(deployment.tenant).get(option.tier, 0)
        return in_use + option.accelerators <= quota

    def _create(self, deployment: Deployment, node: Node, option, decision, *,
                alternatives: list[dict] | None = None) -> Replica:
        replica = Replica.objects.create(
            tenant_id=deployment.tenant_id, deployment=deployment, node=node,
            tier=HardwareTier.objects.get(slug=option.tier), accelerators=option.accelerators,
            generation=deployment.generation, state=Replica.State.PENDING, created_at=self.now)
        # The solver's explanation: the options it did not choose for this deployment, and why.
        if alternatives is None:
            alternatives = [] if decision is None else [
                {"option": {"hardware": a.option.hardware, "accelerators": a.option.accelerators,
                            "rps_per_replica": a.option.rps_per_replica}, "why": a.reason}
                for a in decision.rejected]
        PlacementDecision.objects.create(
            tenant_id=deployment.tenant_id, replica=replica, hardware=option.hardware,
            accelerators=option.accelerators, rps_per_replica=option.rps_per_replica,
            cost_per_hour=(Decimal(option.price_per_accelerator_hour) * option.accelerators).quantize(
                Decimal("0.000001")),
            currency=option.currency, alternatives=alternatives, created_at=self.now)
        transaction.on_commit(lambda pk=replica.pk: self._driver_create(pk))
        self.report.created += 1
        return replica

    def _settle(self, want: _Want, d: Deployment, locked: dict[int, Replica], dropped: list[Replica],
                created: list[Replica]) -> None:
        """Retire what the plan dropped and the old replicas whose replacements are ready; then
        the deployment's status, scaler state and timeline. `d` is locked."""
        if d.status not in ACTIVE_STATUSES:
            return
        if d.generation != want.deployment.generation:
            return  # a new generation arrived mid-pass: the next pass plans it
        dropped = [locked[r.pk] for r in dropped if r.pk in locked and locked[r.pk].state != Replica.State.DRAINING]
        serving = [r for r in want.movable + want.pinned if r not in dropped] + created
        ready_new = sum(1 for r in serving if r.state == Replica.State.READY)
        # New before old: keep as many ready retiring replicas as the desired count lacks new
        # ones ready (so a replacement that could not be placed leaves its old replica serving).
        keep = max(0, want.desired - ready_new)
        retiring = sorted((locked[r.pk] for r in want.retiring if r.pk in locked),
                          key=lambda r: (r.state == Replica.State.READY, r.created_at, r.pk))
        retire_now = retiring[:max(0, len(retiring) - keep)]
        # Old replicas that are not serving yet help nobody: stop them at once.
        retire_now += [r for r in retiring[len(retire_now):] if r.state != Replica.State.READY]
        self._retire(dropped + retire_now)
        moved = [r for r in retire_now if str(r.public_id) in want.moving]
        retire_now = [r for r in retire_now if r not in moved]
        if moved:
            done = {str(r.public_id) for r in moved}
            left = {old: new for old, new in want.moving.items() if old not in done}
            want.scaler_state = {key: value for key, value in want.scaler_state.items() if key != MOVES_KEY}
            if left:
                want.scaler_state[MOVES_KEY] = left
        events = []
        if created:
            nodes = sorted({r.node.name for r in created})
            events.append(("replicas.placed", f"{len(created)} replica(s) placed on {', '.join(nodes)}.",
                           {"replicas": [str(r.public_id) for r in created], "nodes": nodes}))
        if dropped:
            events.append(("replicas.removed", f"{len(dropped)} replica(s) no longer needed: draining.",
                           {"replicas": [str(r.public_id) for r in dropped]}))
        if retire_now:
            events.append(("replicas.replaced", f"{len(retire_now)} old replica(s) replaced: draining.",
                           {"replicas": [str(r.public_id) for r in retire_now]}))
        if moved:
            events.append(("replicas.moved", f"defragmentation: {len(moved)} replica(s) moved; the old one(s) drain "
                                             f"now that the new one(s) serve.",
                           {"replicas": [str(r.public_id) for r in moved],
                            "replacements": [want.moving[str(r.public_id)] for r in moved]}))
        retired = set(retire_now) | set(moved)
        ready_all = ready_new + sum(1 for r in retiring if r not in retired and r.state == Replica.State.READY)
        remaining_old = len(retiring) - len(retired)
        status, reason = self._status(want, d, len(serving), ready_new, ready_all, remaining_old)
        fields = []
        if status != d.status:
            events.append((f"status.{status}", reason or f"Now {status}.", {"status": [d.status, status]}))
            deployment_status_changed(deployment=d, old=d.status, new=status, reason=reason or f"Now {status}.")
            d.status = status
            fields += ["status", "updated_at"]
            d.updated_at = self.now
        kept_old = [r for r in retiring if r not in retired]
        want.scaler_state = {**want.scaler_state, **self._share_traffic(d, serving, kept_old, created)}
        if want.scaler_state != d.scaler_state:
            d.scaler_state = want.scaler_state
            fields.append("scaler_state")
        if fields:
            d.save(update_fields=fields)
        for kind, message, data in events:
            deployment_event_add(deployment=d, kind=kind, message=message, data=data)
        self.report.statuses[str(d.public_id)] = d.status
        if want.unserved:
            self.report.unserved[str(d.public_id)] = want.unserved

    def _share_traffic(self, d: Deployment, serving: list[Replica], kept_old: list[Replica],
                       created: list[Replica]) -> dict:
        """Give every replica of `d` its share of the deployment's traffic (the simulated fleet
        sends it; real drivers ignore it), re-applying the spec of those whose share changed —
        the driver applies a new traffic profile without a restart. A ready replica gets the
        demand ÷ the ready replicas; one still starting, the demand ÷ the ready and starting
        ones (what it will get once they are all up). Returns the shares to remember."""
        if not serving and not kept_old:
            return {TRAFFIC_KEY: {}} if d.scaler_state.get(TRAFFIC_KEY) else {}
        ready = [r for r in serving + kept_old if r.state == Replica.State.READY]
        starting = [r for r in serving if r.state != Replica.State.READY]
        shares = {r: _share(d.requests_per_s, len(ready)) for r in ready}
        shares.update({r: _share(d.requests_per_s, len(ready) + len(starting)) for r in starting})
        tokens = list(_traffic_tokens(d))
        before = d.scaler_state.get(TRAFFIC_KEY) if d.scaler_state.get(TOKENS_KEY) == tokens else None
        before = before if isinstance(before, dict) else {}
        created_pks = {r.pk for r in created}
        for replica, share in shares.items():
            if replica.pk in created_pks:
                self._created_shares[replica.pk] = share  # the creation on commit carries it
            elif before.get(str(replica.public_id)) != share:
                transaction.on_commit(lambda pk=replica.pk, share=share: self._driver_create(pk, share=share,
                                                                                            reapply=True))
        return {TRAFFIC_KEY: {str(r.public_id): share for r, share in shares.items()}, TOKENS_KEY: tokens}

    def _status(self, want: _Want, d: Deployment, total: int, ready_new: int, ready_all: int,
                remaining_old: int) -> tuple[str, str]:
        S = Deployment.Status
        target = max(want.desired, 1 if d.min_replicas else 0)
        if want.unserved and total == 0:
            return S.FAILED, f"Failed: cannot place any replica — {want.unserved}."
        if ready_new >= target and total >= target and remaining_old == 0 and not want.unserved:
            return S.READY, f"Ready: {ready_new} replica(s) serving."
        if d.status in (S.READY, S.DEGRADED):
            if ready_all < d.min_replicas:
                why = f" ({want.unserved})" if want.unserved else ""
                return S.DEGRADED, f"Degraded: {ready_all} of at least {d.min_replicas} replica(s) ready{why}."
            return S.READY, f"Ready: {ready_all} replica(s) serving."
        return S.DEPLOYING, f"Deploying: {ready_new} of {target} replica(s) ready."

    # -- 9. defragmentation

    def _defragment(self, wants: list[_Want]) -> None:
        """Start at most SWITCHYARD_DEFRAG_MAX_MOVES defragmentation moves, at most once every
        SWITCHYARD_DEFRAG_INTERVAL_SECONDS (either 0: never). A move places the new replica now;
        the old one is retired by a later pass once the new one is ready (`_want`, `_settle`)."""
        max_moves = settings.SWITCHYARD_DEFRAG_MAX_MOVES
        interval = settings.SWITCHYARD_DEFRAG_INTERVAL_SECONDS
        if max_moves <= 0 or interval <= 0 or self._problem is None or not self._defrag_due(interval):
            return
        problem, frozen, rows, node_ids = self._defrag_problem(wants)
        moves = placement.defragment(problem, max_moves, frozen=frozen)
        if moves:
            self._start_moves(wants, moves, rows, node_ids)

    def _defrag_due(self, interval: float) -> bool:
        """Claim the next defragmentation step if its time has come: a conditional UPDATE of the
        `defragmentation` lease row, whose expiry is the earliest time of the next step."""
        try:
            with transaction.atomic():
                Lease.objects.get_or_create(name=DEFRAG_LEASE, defaults={"expires_at": self.now})
        except IntegrityError:
            pass  # created by a concurrent pass: the UPDATE below decides
        return Lease.objects.filter(name=DEFRAG_LEASE, expires_at__lte=self.now).update(
            holder="reconcile", expires_at=self.now + timedelta(seconds=interval)) == 1

    def _defrag_problem(self, wants: list[_Want]):
        """The fleet as this pass left it: ready nodes, and as `current` every serving replica of
        the deployments the pass solved for. Deployments whose replicas are not all ready, that
        roll, drain, move or are short of capacity, or were not ready after this pass, are frozen."""
        solved = {d.id: d for d in self._problem.deployments}
        by_id = {str(w.deployment.pk): w for w in wants if str(w.deployment.pk) in solved}
        nodes = list(selectors.node_free_accelerators(Node.objects.filter(state=Node.State.READY))
                     .select_related("zone__region", "accelerator").order_by("pk"))
        ready = {node.pk: node for node in nodes}
        rows = list(Replica.objects.filter(deployment_id__in=[int(key) for key in by_id], state__in=HOLDING,
                                           node_id__in=ready).exclude(state=Replica.State.DRAINING)
                    .order_by("pk"))
        frozen = {key for key, want in by_id.items()
                  if want.retiring or want.pinned or want.unserved
                  or self.report.statuses.get(str(want.deployment.public_id)) != Deployment.Status.READY}
        current = []
        for row in rows:
            key = str(row.deployment_id)
            node = ready[row.node_id]
            if row.state != Replica.State.READY or row.generation != by_id[key].deployment.generation:
                frozen.add(key)
            current.append(placement.Replica(key, node.name, node.accelerator.slug, row.accelerators))
        # Free not counting what any replica holds: `current` lists the ones that may move.
        problem_nodes = tuple(placement.Node(node.name, node.zone.region.slug, node.zone.slug, node.accelerator.slug,
                                             max(0, node.free_accelerators)) for node in nodes)
        problem = placement.Problem(self._problem.hardware, problem_nodes, tuple(solved[key] for key in by_id),
                                    tuple(current))
        return problem, frozen, rows, {node.name: node.pk for node in nodes}

    def _start_moves(self, wants: list[_Want], moves, rows: list[Replica], node_ids: dict[str, int]) -> None:
        """Place each move's new replica (re-checked under the locks, in the house order) and
        record the pair, so the old replica drains once the new one is ready."""
        by_pk = {want.deployment.pk: want for want in wants}
        unused = list(rows)
        pairs = []
        for move in moves:
            old = next((r for r in unused if str(r.deployment_id) == move.replica.deployment
                        and r.node_id == node_ids[move.replica.node] and r.accelerators == move.replica.accelerators), None)
            if old is not None:
                unused.remove(old)
                pairs.append((move, old))
        node_pks = sorted({node_ids[move.to.node] for move, _ in pairs} | {old.node_id for _, old in pairs})
        with transaction.atomic():
            nodes = {node.pk: node for node in Node.objects.select_for_update().filter(pk__in=node_pks)
                     .select_related("accelerator", "zone__region").order_by("pk")}
            held = dict(Replica.objects.filter(node_id__in=node_pks, state__in=HOLDING).values("node_id")
                        .annotate(total=Sum("accelerators")).values_list("node_id", "total").order_by())
            locked = {r.pk: r for r in Replica.objects.select_for_update()
                      .filter(pk__in=[old.pk for _, old in pairs]).order_by("pk")}
            current = {d.pk: d for d in Deployment.objects.select_for_update(of=("self",))
                       .filter(pk__in=sorted({old.deployment_id for _, old in pairs}))
                       .select_related("model", "tenant").order_by("pk")}
            for move, old in pairs:
                self._start_move(move, locked.get(old.pk), current.get(old.deployment_id),
                                 nodes[node_ids[move.to.node]], nodes[old.node_id], held, by_pk[old.deployment_id])

    def _start_move(self, move, old: Replica | None, d: Deployment | None, node: Node, source: Node,
                    held: dict[int, int], want: _Want) -> None:
        if old is None or d is None or old.state != Replica.State.READY or d.status != Deployment.Status.READY \
                or d.generation != old.generation:
            return  # changed since it was read: the next step decides again
        free = node.accelerators - held.get(node.pk, 0)
        if node.state != Node.State.READY or free < move.to.accelerators:
            self.report.notes.append(f"defragmentation: {node.name} has {free} accelerators free under the lock, "
                                     f"{move.to.accelerators} needed; not moved")
            return
        option = next(o for o in want.options if (o.hardware, o.accelerators) == (move.to.hardware, move.to.accelerators))
        if not self._within_quota(d, option, None):
            self.report.notes.append(f"defragmentation: deployment {d.public_id}: tenant quota on {option.tier} reached")
            return
        was = next((o for o in want.options if (o.hardware, o.accelerators) == (move.replica.hardware,
                                                                                move.replica.accelerators)), None)
        held[node.pk] = held.get(node.pk, 0) + move.to.accelerators
        why = f"{move.reason} (it ran on {source.name})"
        new = self._create(d, node, option, None, alternatives=[{"option": {
            "hardware": move.replica.hardware, "accelerators": move.replica.accelerators,
            "rps_per_replica": was.rps_per_replica if was is not None else 0.0}, "why": why}])
        state = d.scaler_state if isinstance(d.scaler_state, dict) else {}
        moving = state.get(MOVES_KEY) if isinstance(state.get(MOVES_KEY), dict) else {}
        d.scaler_state = {**state, MOVES_KEY: {**moving, str(old.public_id): str(new.public_id)}}
        d.save(update_fields=["scaler_state"])
        deployment_event_add(deployment=d, kind="replicas.moving",
                             message=f"{move.reason}. Replica {old.public_id} moves from {source.name} to {node.name}: "
                                     f"the old one drains once the new one serves.",
                             data={"replica": str(old.public_id), "replacement": str(new.public_id),
                                   "from": source.name, "to": node.name})
        self.report.moved += 1

    # -- 7. drains

    def _finish_drains(self) -> None:
        for node in Node.objects.filter(state=Node.State.DRAINING).order_by("pk"):
            if node_finish_drain(node=node):
                self.report.nodes_drained.append(node.name)

    # -- the driver, after commits

    def _driver_create(self, replica_pk: int, *, share: float | None = None, reapply: bool = False) -> None:
        """Apply the replica's spec to the driver: create it, or (`reapply`) give a running one a
        new traffic share, which never restarts it."""
        replica = (Replica.objects.select_related("deployment__model", "node__zone__region", "node__accelerator")
                   .filter(pk=replica_pk).first())
        if replica is None or replica.state not in HOLDING or reapply and replica.state == Replica.State.DRAINING:
            return
        deployment, model = replica.deployment, replica.deployment.model
        share = share if share is not None else self._created_shares.get(replica.pk)
        if share is None:  # re-created after a lost request: the share `_share_traffic` would give
            others = Replica.objects.filter(deployment=deployment, state__in=HOLDING).exclude(
                state=Replica.State.DRAINING)
            ready = others.filter(state=Replica.State.READY).count()
            share = _share(deployment.requests_per_s,
                           ready if replica.state == Replica.State.READY else others.count())
        input_median, input_p90, output_median, output_p90 = _traffic_tokens(deployment)
        traffic = TrafficProfile(requests_per_s=share, input_tokens_median=input_median,
                                 input_tokens_p90=input_p90, output_tokens_median=output_median,
                                 output_tokens_p90=output_p90)
        try:
            spec = ReplicaSpec(
                replica_id=str(replica.public_id), deployment_id=str(deployment.public_id),
                model_source=model.source_uri, model_config=model.config, hardware=replica.node.accelerator.slug,
                accelerators=replica.accelerators, dtype=model.dtype, modality=model.modality,
                credential_ref=model.credential_ref, node_id=replica.node.name,
                region=replica.node.zone.region.slug, zone=replica.node.zone.slug,
                served_model_name=deployment.name, traffic=traffic)
            self.driver.create_replica(spec)
        except FleetError as error:
            if reapply:
                # The replica runs on with its old share; the next change of shares tries again.
                logger.warning("replica %s: new traffic share not applied: %s", replica.public_id, error)
                self.report.notes.append(f"traffic of {replica.public_id}: {error}")
                return
            # The row fails (its accelerators are freed); the deployment hears why; the next
            # pass places a replacement.
            logger.warning("replica %s: the driver refused it: %s", replica.public_id, error)
            Replica.objects.filter(pk=replica.pk, state__in=HOLDING).update(
                state=Replica.State.FAILED, stopped_at=self.now)
            deployment_event_add(deployment=deployment, kind="replica.failed",
                                 message=f"The fleet refused a replica: {error}",
                                 data={"replicas": [str(replica.public_id)]})
            self.report.notes.append(f"create {replica.public_id}: {error}")

    def _driver_delete(self, replica_id: str) -> None:
        try:
            self.driver.delete_replica(replica_id)
        except FleetError as error:
            # Retried by the next pass: the row stays draining until the driver reports it gone.
            logger.warning("replica %s: delete failed: %s", replica_id, error)
            self.report.notes.append(f"delete {replica_id}: {error}")


def _moves_under_way(recorded, live: set[str]) -> dict[str, str]:
    """The defragmentation moves recorded in a deployment's state whose old and new replicas both
    still serve or start: a move whose new replica failed is dropped (the old one stays), one whose
    old replica is gone is done."""
    if not isinstance(recorded, dict):
        return {}
    return {old: new for old, new in recorded.items() if old in live and new in live}


def _share(requests_per_s: float, replicas: int) -> float:
    """One replica's part of a deployment's traffic (the simulator's limit caps it)."""
    return min(requests_per_s / max(1, replicas), 100_000.0)


def _traffic_tokens(deployment: Deployment) -> tuple[int, int, int, int]:
    """The token lengths of the simulated traffic: median and p90 of the log-normal the
    deployment's median and p95 describe (the simulator fits its sizes to median and p90)."""
    return (deployment.input_tokens, lognormal_p90(deployment.input_tokens, deployment.input_tokens_p95),
            deployment.output_tokens, lognormal_p90(deployment.output_tokens, deployment.output_tokens_p95))

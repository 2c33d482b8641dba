"""Exactly-once metering with real processes: a Celery worker running the accelerator-seconds
collector is killed with SIGKILL in the middle of a run (the whole worker, or just the pool
process running the task), or its Redis broker is restarted mid-run; runs go on as beat would
send them, and every replica-minute is counted once — none lost, none twice — checked by SQL
against the holding times computed independently.

The worker reaches this test's database (SQLite file or PostgreSQL) through DATABASE_URL and
the broker of the run (the embedded filesystem broker, or Redis), on a queue of its own so no
other worker on the machine takes these messages.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.utils import timezone

from billing.accelerators import minute_floor
from billing.collectors import ACCELERATOR_WATERMARK, MAX_MINUTES_PER_RUN
from billing.models import CollectorWatermark
from billing.tasks import accelerator_usage_collect_task
from scheduler.models import HardwareTier
from scheduler.services import catalog_sync
from tests.billing.factories import ensure_built_in_meters
from tests.billing.fleet_usage import (
    billed_accelerator_seconds,
    expected_accelerator_seconds,
    expected_replica_minutes,
    make_replicas,
)
from tests.cross_tenant_objects import make_deployment, small_fleet

TASK = "billing.tasks.accelerator_usage_collect_task"
WORKER_START_TIMEOUT = 90  # seconds: a cold worker imports Django and connects to the broker
RUN_TIMEOUT = 240  # seconds for one collector run (an hour of minutes for hundreds of replicas)
HOURS_BEHIND = 3  # the collector starts this far behind: three full runs and a bit
REPLICAS = 400  # enough that one run (60 minutes) takes seconds, so it can be caught mid-run

pytestmark = [pytest.mark.worker]


def database_url() -> str:
    """The URL of the database this test runs on (the test database, not the configured one)."""
    db = settings.DATABASES["default"]
    if settings.DATABASE_IS_POSTGRES:
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


class Worker:
    """A real `celery worker` process on its own queue; `start()` again after a kill."""

    def __init__(self, log_dir: Path, queue: str, env_overrides: dict | None = None):
        self.log_dir, self.queue = log_dir, queue
        self.env = {**os.environ, "SWITCHYARD_DATA_DIR": str(settings.DATA_DIR), "DATABASE_URL": database_url(),
                    **(env_overrides or {})}
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"worker-{self.starts}.log", "w")  # noqa: SIM115 - the worker writes to it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "--queues", self.queue,
             "--concurrency", "1", "--pool", "prefork", "--hostname", f"metering-{uuid.uuid4().hex[:8]}@%h",
             "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            env=self.env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def pool_children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL the whole worker: the main process and its pool, with no chance to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@pytest.fixture
def fleet_usage(transactional_db, tenant_a):
    """Hundreds of replicas placed and stopped at random microseconds over the last hours, and the
    collector's watermark HOURS_BEHIND hours back: the worker has several runs of work."""
    catalog_sync()
    ensure_built_in_meters()
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["test-1"])
    node = small_fleet(nodes=1)[0]
    tier = HardwareTier.objects.get(slug="h100-80gb-on-demand")
    start = minute_floor(timezone.now()) - timedelta(hours=HOURS_BEHIND)
    rng = random.Random(11)
    window = HOURS_BEHIND * 3600 * 1_000_000
    spans = []
    for _ in range(REPLICAS):
        created = start + timedelta(microseconds=rng.randrange(-window // 10, window))
        stopped = None if rng.random() < 0.25 else created + timedelta(microseconds=rng.randrange(1, window // 2))
        spans.append((created, stopped, rng.choice([1, 2, 4, 8])))
    replicas = make_replicas(deployment, node, tier, spans)
    CollectorWatermark.objects.create(name=ACCELERATOR_WATERMARK, position=start)
    return start, replicas


def watermark() -> object:
    return CollectorWatermark.objects.get(name=ACCELERATOR_WATERMARK).position


def committed_snapshot():
    """The watermark and the billed totals as of one moment. (A surviving worker may commit
    more minutes meanwhile: read until no commit fell between the two reads of the watermark.)"""
    while True:
        before = watermark()
        totals = billed_accelerator_seconds()
        if watermark() == before:
            return before, totals


def wait_until(condition, timeout: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.process.poll() is None, f"the worker died:\n{worker.logs()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout} s:\n{worker.logs()}"
        time.sleep(0.02)


def catch_up(send, worker: Worker) -> list[dict]:
    """Send runs one at a time, as beat would, until a run reports nothing left behind."""
    summaries = []
    for _ in range(HOURS_BEHIND + 5):
        result = send()
        deadline = time.monotonic() + WORKER_START_TIMEOUT + RUN_TIMEOUT
        while not result.ready():
            assert worker.process.poll() is None, f"the worker died:\n{worker.logs()}"
            assert time.monotonic() < deadline, f"no answer from the worker:\n{worker.logs()}"
            time.sleep(0.1)
        summaries.append(result.get(timeout=10))
        result.forget()
        if not summaries[-1]["behind"]:
            return summaries
    raise AssertionError(f"still behind after {len(summaries)} runs: {summaries}")


def assert_every_minute_counted_once(start, replicas) -> None:
    end = watermark()
    assert end >= minute_floor(timezone.now()) - timedelta(minutes=3), "the collector did not catch up"
    raw, rolled, events = billed_accelerator_seconds()
    expected = expected_accelerator_seconds(replicas, start, end)
    assert raw == expected, f"events hold {raw} accelerator-seconds, the replicas held {expected}"
    assert rolled == expected, f"rollups hold {rolled} accelerator-seconds, the replicas held {expected}"
    assert events == expected_replica_minutes(replicas, start, end)


@pytest.mark.parametrize("victim", ["whole-worker", "pool-process"])
def test_a_worker_killed_mid_run_loses_and_doubles_nothing(fleet_usage, tmp_path, victim):
    start, replicas = fleet_usage
    queue = f"metering-test-{uuid.uuid4().hex[:8]}"
    worker = Worker(tmp_path, queue)
    worker.start()
    try:
        accelerator_usage_collect_task.apply_async(queue=queue)
        # Mid-run: some minutes of the run committed, most not yet.
        wait_until(lambda: watermark() >= start + timedelta(minutes=3), WORKER_START_TIMEOUT + 60,
                   "the first minutes", worker)
        if victim == "whole-worker":
            worker.kill()
        else:
            [child] = worker.pool_children()
            os.kill(child, signal.SIGKILL)
        at_kill = watermark()
        assert start < at_kill < start + timedelta(minutes=MAX_MINUTES_PER_RUN), "the run was not caught mid-way"
        # Nothing it did not commit is counted: the events so far are exactly the committed minutes.
        position, (raw, rolled, _events) = committed_snapshot()
        assert raw == rolled == expected_accelerator_seconds(replicas, start, position)

        if victim == "whole-worker":
            worker.start()
        summaries = catch_up(lambda: accelerator_usage_collect_task.apply_async(queue=queue), worker)
    finally:
        worker.stop()  # before counting: no run may move the watermark while the totals are read
    assert sum(s["rejected"] for s in summaries) == 0
    assert_every_minute_counted_once(start, replicas)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A throwaway redis-server (not the machine's one, which other work shares), without
    persistence: a restart loses every queued and unacknowledged message."""

    def __init__(self, log_dir: Path):
        self.port, self.log_dir, self.process = free_port(), log_dir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start a broker of its own")
def test_a_redis_restart_mid_run_loses_and_doubles_nothing(fleet_usage, tmp_path):
    start, replicas = fleet_usage
    redis = RedisServer(tmp_path)
    redis.start()
    queue = f"metering-test-{uuid.uuid4().hex[:8]}"
    worker = Worker(tmp_path, queue, {"REDIS_URL": redis.url})
    # Not the current app: later tests would otherwise send to this short-lived Redis.
    sender = Celery("metering-test", broker=redis.url, backend=redis.url, set_as_current=False)
    sender.conf.update(broker_connection_retry_on_startup=True, task_serializer="json", accept_content=["json"],
                       result_serializer="json")
    worker.start()
    try:
        sender.send_task(TASK, queue=queue)
        wait_until(lambda: watermark() >= start + timedelta(minutes=3), WORKER_START_TIMEOUT + 60,
                   "the first minutes", worker)
        redis.stop()  # the broker and result store vanish mid-run, with every message they held
        at_stop = watermark()
        assert at_stop < start + timedelta(minutes=MAX_MINUTES_PER_RUN), "the run was not caught mid-way"
        time.sleep(2)
        redis.start()
        # The run itself needs no broker: it carries on committing minutes meanwhile.
        wait_until(lambda: watermark() > at_stop, RUN_TIMEOUT, "progress after the restart", worker)
        summaries = catch_up(lambda: sender.send_task(TASK, queue=queue), worker)
    finally:
        worker.stop()
        sender.close()
        redis.stop()
    assert sum(s["rejected"] for s in summaries) == 0
    assert_every_minute_counted_once(start, replicas)

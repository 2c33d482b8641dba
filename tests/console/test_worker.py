"""A real Celery worker process round-trips a task through the configured broker:
Redis when REDIS_URL is set, else the embedded filesystem broker of this test
session's data folder."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from console.celery import app as celery_app
from console.tasks import ping_task

WORKER_START_TIMEOUT = 90  # seconds: a cold worker imports Django and connects to the broker


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the worker's process group, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the pool
    except ProcessLookupError:
        pass
    process.wait()


@pytest.mark.worker
def test_a_worker_process_answers_ping_task(tmp_path):
    # The worker must see the broker this process sends to: the same environment,
    # and the data folder this process resolved (the default depends on nothing else).
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(settings.DATA_DIR)}
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "--queues", "default",
             "--concurrency", "1", "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h",
             "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        result = ping_task.delay("x")
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not result.ready():
            assert worker.poll() is None, f"the worker died:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no answer in {WORKER_START_TIMEOUT} s:\n{log_path.read_text()}"
            time.sleep(0.1)
        assert result.get(timeout=5) == "pong:x"
        result.forget()
    finally:
        _stop(worker)


def test_ping_worker_fails_when_no_worker_answers(monkeypatch):
    # A queue no worker listens to, so the outcome does not depend on what else runs here.
    queue = f"nobody-listens-{uuid.uuid4().hex[:8]}"
    send = ping_task.apply_async
    monkeypatch.setattr(ping_task, "apply_async", lambda *args, **kwargs: send(*args, queue=queue, **kwargs))
    try:
        with pytest.raises(CommandError, match="No answer within 1 s"):
            call_command("ping_worker", "--timeout", "1")
    finally:
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)

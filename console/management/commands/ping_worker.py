import time
import uuid

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError

from console.celery import app as celery_app
from console.tasks import ping_task


class Command(BaseCommand):
    help = (
        "Check that the broker and at least one Celery worker work: send console.tasks.ping_task, "
        "wait for its answer and print the round-trip time. Exits non-zero when no answer comes in time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                            help="How long to wait for the answer (default 10).")

    def handle(self, *args, **options):
        timeout = options["timeout"]
        if timeout <= 0:
            raise CommandError("--timeout must be a positive number of seconds.")
        if settings.CELERY_TASK_ALWAYS_EAGER:
            raise CommandError("CELERY_TASK_ALWAYS_EAGER is on: tasks run in the caller, there is no worker to ping.")
        broker = celery_app.connection().as_uri()  # as_uri() masks a password
        payload = uuid.uuid4().hex
        started = time.monotonic()
        try:
            # A ping nobody answered in time expires, so a worker started later skips it.
            result = ping_task.apply_async(args=[payload], expires=timeout)
        except OperationalError as exc:
            raise CommandError(f"Cannot send to the broker {broker}: {exc}") from None
        try:
            answer = result.get(timeout=timeout, interval=0.05)
        except CeleryTimeoutError:
            raise CommandError(
                f"No answer within {timeout:g} s. Is a worker running (`python manage.py up`, or "
                f"`celery -A console worker`) against the broker {broker}?"
            ) from None
        elapsed_ms = (time.monotonic() - started) * 1000
        result.forget()
        if answer != f"pong:{payload}":
            raise CommandError(f"Unexpected answer from the worker: {answer!r}")
        self.stdout.write(f"pong in {elapsed_ms:.0f} ms")

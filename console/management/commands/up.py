"""`python manage.py up`: the one command that runs Switchyard on this host.

It migrates the database, seeds a demo tenant into an empty one, and then
supervises three child processes: the web server (gunicorn), a Celery worker on
every queue, and Celery beat. It prints the URL once the web server answers
/healthz. SIGINT (Ctrl-C), SIGTERM or SIGHUP stop every child and exit 0; a child
that dies on its own stops the others and exits non-zero, naming it.

Each child runs in its own session, so a Ctrl-C typed in the terminal reaches only
`up`, which then stops the children in order (SIGTERM, wait, SIGKILL of the whole
process group after --stop-timeout). On Linux the children also get SIGTERM should
`up` itself be killed, so no server is left behind holding the port.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from console.celery import QUEUES
from console.celery import app as celery_app
from console.demo import DEMO_OWNER_EMAIL, DemoCredentials, demo_owner_exists, demo_seed

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass
class Child:
    """One supervised process: `name` is how messages call it."""

    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _die_with_parent():
    """A preexec function that asks Linux to SIGTERM the child when `up` dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # `up` died before prctl took effect
            os._exit(1)

    return preexec


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _http_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Command(BaseCommand):
    help = (
        "Run Switchyard: migrate, seed a demo tenant into an empty database, then run the web server "
        "(gunicorn), a Celery worker and Celery beat until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
        parser.add_argument(
            "--data-dir", metavar="PATH",
            help="Data folder (SQLite database, embedded broker, secret key); sets SWITCHYARD_DATA_DIR "
                 "for this command and everything it starts. Default: $SWITCHYARD_DATA_DIR or ./var.",
        )
        parser.add_argument("--workers", type=int, default=None,
                            help="gunicorn worker processes (default: $WEB_CONCURRENCY or 2).")
        parser.add_argument("--worker-concurrency", type=int, default=2,
                            help="Celery worker pool processes (default 2).")
        parser.add_argument("--no-seed", action="store_true", help="Do not create the demo tenant.")
        parser.add_argument("--startup-timeout", type=float, default=90.0, metavar="SECONDS",
                            help="How long the web server may take to answer /healthz (default 90).")
        parser.add_argument("--stop-timeout", type=float, default=20.0, metavar="SECONDS",
                            help="How long children may take to stop before they are killed (default 20).")

    # --- main ---------------------------------------------------------------------------------

    def handle(self, *args, **options):
        if options["data_dir"]:
            data_dir = Path(options["data_dir"]).expanduser().resolve()
            if data_dir != settings.DATA_DIR:
                self._reexec_with_data_dir(data_dir, options)
        host, port = options["host"], options["port"]
        workers = self._web_workers(options["workers"])
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535, not {port}.")
        if options["worker_concurrency"] < 1:
            raise CommandError("--worker-concurrency must be at least 1.")
        self._check_port_free(host, port)

        self._say(f"Data folder: {settings.DATA_DIR}")
        self._say(f"Database:    {self._database_description()}")
        self._say(f"Broker:      {self._broker_description()}")
        self._say("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=max(0, options["verbosity"] - 1))
        if settings.PRODUCTION:
            self._say("Collecting static files…")
            call_command("collectstatic", interactive=False, verbosity=max(0, options["verbosity"] - 1))
        credentials = None if options["no_seed"] else self._seed()
        # The children open their own connections; `up` keeps none open while it supervises.
        connections.close_all()

        env = self._child_environment()
        children = self._children(host, port, workers, options["worker_concurrency"])
        self._stop_requests = 0
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request_stop)
        announced, failure = False, None
        try:
            self._say(
                f"Starting the web server (gunicorn, {workers} workers), a worker (queues {', '.join(QUEUES)}; "
                f"concurrency {options['worker_concurrency']}) and beat…"
            )
            preexec = _die_with_parent()
            for child in children:
                if self._stop_requests:
                    break
                child.process = subprocess.Popen(
                    child.argv, env=env, cwd=settings.BASE_DIR, start_new_session=True, preexec_fn=preexec
                )
                self._say(f"  {child.name}: pid {child.process.pid}")
            announced, failure = self._supervise(children, host, port, options["startup_timeout"], credentials)
        finally:
            self._stop(children, options["stop_timeout"])
            if credentials is not None and not announced:
                # The demo was created but its login never shown: show it now, it cannot be recovered later.
                self._say_credentials(credentials)
        if failure:
            raise CommandError(failure)
        self._say("Switchyard stopped.")

    # --- preparation --------------------------------------------------------------------------

    def _reexec_with_data_dir(self, data_dir: Path, options) -> None:
        """Settings are read once, at process start, so `--data-dir` restarts `up` (same pid)
        with SWITCHYARD_DATA_DIR set: migrate, seed and every child then read the same settings."""
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "up",
                "--host", options["host"], "--port", str(options["port"]), "--data-dir", str(data_dir),
                "--worker-concurrency", str(options["worker_concurrency"]),
                "--startup-timeout", str(options["startup_timeout"]),
                "--stop-timeout", str(options["stop_timeout"]),
                "--verbosity", str(options["verbosity"])]
        if options["workers"] is not None:
            argv += ["--workers", str(options["workers"])]
        if options["no_seed"]:
            argv.append("--no-seed")
        if options.get("no_color"):
            argv.append("--no-color")
        if options.get("force_color"):
            argv.append("--force-color")
        env = {**os.environ, "SWITCHYARD_DATA_DIR": str(data_dir)}
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)

    def _web_workers(self, workers: int | None) -> int:
        if workers is None:
            raw = os.environ.get("WEB_CONCURRENCY", "2")
            try:
                workers = int(raw)
            except ValueError:
                raise CommandError(f"WEB_CONCURRENCY must be a whole number, not {raw!r}.") from None
        if workers < 1:
            raise CommandError(f"The web server needs at least 1 worker, not {workers}.")
        return workers

    def _check_port_free(self, host: str, port: int) -> None:
        """Fail before migrating anything when another server holds the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.create_server((host, port), family=family):
                pass
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
                "Is Switchyard already running? Choose another port with --port."
            ) from None

    def _database_description(self) -> str:
        db = settings.DATABASES["default"]
        if settings.DATABASE_IS_POSTGRES:
            return f"PostgreSQL {db.get('NAME')} on {db.get('HOST') or 'the local socket'}:{db.get('PORT') or 5432}"
        return f"SQLite {db['NAME']}"

    def _broker_description(self) -> str:
        if settings.REDIS_URL:
            return f"Redis {celery_app.connection().as_uri()}"  # as_uri() masks a password
        return f"embedded (files in {settings.BROKER_DIR})"

    def _seed(self) -> DemoCredentials | None:
        credentials = demo_seed()
        if credentials is not None:
            self._say(f"Created the demo tenant {credentials.tenant_name!r}; its login is shown once it is running.")
        elif demo_owner_exists():
            self._say(f"The demo tenant exists already: log in as {DEMO_OWNER_EMAIL} with the password "
                      "shown when it was created.")
        else:
            self._say("The database has tenants already: no demo tenant created.")
        return credentials

    def _child_environment(self) -> dict[str, str]:
        """What every child sees: this environment, the same data folder, and one shared
        Prometheus folder (emptied now) so /metrics merges every process's figures."""
        metrics_dir = settings.DATA_DIR / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        return {
            **os.environ,
            "SWITCHYARD_DATA_DIR": str(settings.DATA_DIR),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONUNBUFFERED": "1",
        }

    def _children(self, host: str, port: int, workers: int, concurrency: int) -> list[Child]:
        python = sys.executable
        return [
            Child("web server", [
                python, "-m", "gunicorn", "console.wsgi:application",
                "--bind", f"{_http_host(host)}:{port}",
                "--workers", str(workers),
                # Inside --stop-timeout, so a graceful stop is not cut short by SIGKILL.
                "--graceful-timeout", "10",
                # `up` is the supervisor: no control socket (its default path is shared by every gunicorn).
                "--no-control-socket",
            ]),
            Child("worker", [
                python, "-m", "celery", "-A", "console", "--quiet", "worker",
                "--queues", ",".join(QUEUES), "--concurrency", str(concurrency), "--loglevel", "INFO",
            ]),
            Child("beat", [
                python, "-m", "celery", "-A", "console", "--quiet", "beat",
                "--schedule", str(settings.DATA_DIR / "celerybeat-schedule"), "--loglevel", "INFO",
            ]),
        ]

    # --- supervision --------------------------------------------------------------------------

    def _request_stop(self, signum, frame) -> None:
        self._stop_requests += 1

    def _supervise(self, children, host, port, startup_timeout, credentials) -> tuple[bool, str | None]:
        """Watch the children until a stop is requested or one of them dies.

        Returns whether the URL was announced, and why `up` must fail (None: a requested stop).
        """
        # Bound to every address (0.0.0.0, ::), the server is reached at loopback from here.
        base_url = f"http://{_http_host(WILDCARD_HOSTS.get(host, host))}:{port}/"
        probe_url = base_url + "healthz"
        # Never through a proxy from the environment: this is a loopback check.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + startup_timeout
        announced = False
        while not self._stop_requests:
            for child in children:
                returncode = child.process.poll()
                if returncode is not None:
                    return announced, (f"The {child.name} (pid {child.process.pid}) "
                                       f"{_exit_description(returncode)} unexpectedly; stopped the others.")
            if not announced:
                if self._answers(opener, probe_url):
                    listening = f" (listening on {host or 'every address'})" if host in WILDCARD_HOSTS else ""
                    self._say(self.style.SUCCESS(f"Switchyard is running at {base_url}{listening}"))
                    if credentials is not None:
                        self._say_credentials(credentials)
                    self._say("Press Ctrl-C to stop.")
                    announced = True
                elif time.monotonic() > deadline:
                    return False, (f"The web server did not answer {probe_url} within {startup_timeout:g} s; "
                                   "stopped everything.")
            time.sleep(0.25 if announced else 0.1)
        return announced, None

    @staticmethod
    def _answers(opener, url: str) -> bool:
        try:
            with opener.open(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False  # not listening yet

    def _stop(self, children: list[Child], timeout: float) -> None:
        """SIGTERM to each child, wait up to `timeout` (a further stop request cuts it short),
        then SIGKILL whatever is left of each child's process group."""
        running = [child for child in children if child.running]
        if running:
            self._say(f"Stopping {', '.join(child.name for child in running)}…")
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        requests_before = self._stop_requests
        deadline = time.monotonic() + timeout
        while any(child.running for child in running) and time.monotonic() < deadline:
            if self._stop_requests > requests_before:
                break
            time.sleep(0.05)
        for child in children:
            if child.process is None:
                continue
            if child.running:
                self.stderr.write(f"The {child.name} did not stop in time: killing it.")
                self.stderr.flush()
            try:
                # The whole group: a gunicorn or Celery pool process orphaned by its master goes too.
                os.killpg(child.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone already: everything in it exited
            child.process.wait()

    # --- output -------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        # Flushed at once: whoever watches `up` (a person, a test, a supervisor) waits for these lines.
        self.stdout.write(message)
        self.stdout.flush()

    def _say_credentials(self, credentials: DemoCredentials) -> None:
        self._say(
            f"Demo login (shown this once, store it now):\n"
            f"  email     {credentials.email}\n"
            f"  password  {credentials.password}\n"
            f"  API key   {credentials.api_key}"
        )


"""Shared parts of the benchmarks: the report, a throw-away environment, a gunicorn
server, and an HTTP load generator.

Nothing here imports Django: the benchmark process drives the project through
`manage.py` and HTTP, like an operator would, so it measures the code as deployed.
"""

from __future__ import annotations

import array
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# `python -m bench` exit statuses: a benchmark that produced its figure exits 0 (PASS or MISS:
# it measures, it does not assert) unless --fail-on-miss; one that could not exits 1.
EXIT_OK, EXIT_FAILED, EXIT_MISS = 0, 1, 3


class BenchmarkFailed(Exception):
    """The benchmark could not produce a valid figure (bad responses, a server that died…)."""


# --- Report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A target from DESIGN.md "Performance targets": `figure <op> value`."""

    op: str  # ">=" or "<="
    value: float

    def met(self, figure: float) -> bool:
        return figure >= self.value if self.op == ">=" else figure <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return None


def _git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine_facts() -> dict[str, str]:
    ram = _ram_gib()
    return {
        "date": utc_now(),
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, {f'{ram:.1f} GiB RAM' if ram else 'RAM unknown'}, "
                   f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "code": f"{PROJECT_ROOT}, git {_git_revision()}",
    }


def print_header(name: str, facts: dict[str, str]) -> None:
    print(f"Switchyard benchmark: {name}")
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        print(f"  {key:<{width}}  {value}")
    print(flush=True)


def print_verdict(*, figure_name: str, figure: float, target: Target, how_to_read: str) -> bool:
    """Print the headline figure (a ratio to the same-run baseline) and whether it meets its target."""
    met = target.met(figure)
    print(f"{figure_name} = {figure:.3f}   target {target} (DESIGN.md)   {'PASS' if met else 'MISS'}")
    print(f"How to read it: {how_to_read}", flush=True)
    return met


def exit_status(met: bool, args) -> int:
    return EXIT_MISS if getattr(args, "fail_on_miss", False) and not met else EXIT_OK


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        print("  " + "  ".join(str(cell).rjust(width) if index else str(cell).ljust(width)
                               for index, (cell, width) in enumerate(zip(row, widths, strict=True))))
    print(flush=True)


@contextlib.contextmanager
def sigterm_as_exit():
    """SIGTERM unwinds like Ctrl-C does, so every `finally` (stopping servers, dropping
    databases) runs when the benchmark is killed politely."""

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_guarded(run, args, *, on_interrupt: str) -> int:
    """`run(args)` as a benchmark's exit code: 1 with the reason when it fails its checks, 130
    when interrupted (Ctrl-C or SIGTERM, after every `finally` has cleaned up)."""
    with sigterm_as_exit():
        try:
            return run(args)
        except BenchmarkFailed as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print(f"\ninterrupted: {on_interrupt}", file=sys.stderr, flush=True)
            return 130


# --- Environment ----------------------------------------------------------------------------


@dataclass
class BenchEnvironment:
    """A fresh Switchyard installation for one benchmark run.

    A temporary SWITCHYARD_DATA_DIR (holding the SQLite database when there is no
    DATABASE_URL). With a PostgreSQL DATABASE_URL, a dedicated database is created
    next to the named one and dropped afterwards, so nobody's data is touched. REDIS_URL
    is used as given: the benchmark only adds keys with expiry under its own fresh
    credential. Use as a context manager; everything is removed on exit.
    """

    extra_env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    env: dict[str, str] = field(init=False, default_factory=dict)
    data_dir: Path = field(init=False)
    database: str = field(init=False, default="")
    _admin_url: str = field(init=False, default="")
    _bench_database: str = field(init=False, default="")

    def __enter__(self) -> BenchEnvironment:
        self.data_dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHYARD_")}
        env.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")  # a candidate configuration may be named
        env.update({
            "SWITCHYARD_DATA_DIR": str(self.data_dir),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        try:
            url = env.get("DATABASE_URL", "")
            if url:
                env["DATABASE_URL"] = self._create_postgres_database(url)
            else:
                self.database = f"SQLite {_sqlite_version()}, file in {self.data_dir} (no DATABASE_URL)"
            self.env = env
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _create_postgres_database(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql", "pgsql", "postgis"}:
            raise BenchmarkFailed(f"DATABASE_URL must be PostgreSQL (or unset, for SQLite), not {parts.scheme}://")
        import psycopg  # a project dependency; imported here so SQLite runs do not need it

        name = f"switchyard_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self._admin_url = url
        try:
            with psycopg.connect(url, autocommit=True) as connection:
                version = connection.execute("SHOW server_version").fetchone()[0]
                connection.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            raise BenchmarkFailed(f"could not create the benchmark's database {name} through DATABASE_URL "
                                  f"(its role needs the CREATEDB privilege): {exc}") from None
        self._bench_database = name
        host = parts.hostname or "localhost"
        self.database = f"PostgreSQL {version} at {host}:{parts.port or 5432}, dedicated database {name} " \
                        f"(created for this run, dropped after)"
        return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    def __exit__(self, *exc_info) -> None:
        if self._bench_database:
            import psycopg

            try:
                with psycopg.connect(self._admin_url, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{self._bench_database}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"warning: could not drop the benchmark's database {self._bench_database} ({exc}); "
                      f"drop it by hand", file=sys.stderr)
            self._bench_database = ""
        if self.keep:
            print(f"(kept the data dir {self.data_dir})")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def redis(self) -> str:
        url = self.env.get("REDIS_URL", "")
        if not url:
            return "none (REDIS_URL unset): local-memory cache, throttle counters are database upserts"
        host = urllib.parse.urlsplit(url)
        return f"Redis {_redis_version(url)} at {host.hostname}:{host.port or 6379} (cache and throttle counters)"

    def manage(self, *args: str) -> str:
        """Run `manage.py <args>` in this environment; its stdout, or BenchmarkFailed with its stderr."""
        completed = subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=self.env,
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            tail = "\n".join(completed.stderr.strip().splitlines()[-25:])
            raise BenchmarkFailed(f"manage.py {' '.join(args)} exited {completed.returncode}; its last words:\n{tail}")
        return completed.stdout

    def create_tenant(self, name: str = "Bench") -> dict:
        """A tenant, its owner and an all-scopes API key, via the `create_tenant` command."""
        out = self.manage("create_tenant", name, "--owner", f"bench-{secrets.token_hex(4)}@example.com", "--json")
        return json.loads(out)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _redis_version(url: str) -> str:
    try:
        import redis

        return redis.Redis.from_url(url, socket_timeout=2).info("server")["redis_version"]
    except Exception as exc:  # only a label in the report; the server finds out for real
        return f"(version unknown: {exc.__class__.__name__})"


# --- Server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GunicornServer:
    """`gunicorn console.wsgi:application` on a free local port, in its own process group.

    Use as a context manager: the server is ready (answers /healthz) inside the block
    and stopped — SIGTERM, a graceful wait, then SIGKILL of its group — on the way out,
    whatever happened inside.
    """

    def __init__(self, env: dict[str, str], *, workers: int, worker_class: str = "sync", threads: int = 1,
                 log_dir: Path, app: str = "console.wsgi:application", ready_timeout: float = 30.0):
        self.env = env
        self.app = app
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.port = free_port()
        self.log_path = log_dir / "gunicorn.log"
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    @property
    def description(self) -> str:
        threads = f" × {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"gunicorn {_gunicorn_version()}, {self.workers} {self.worker_class} workers{threads}, " \
               f"127.0.0.1:{self.port}"

    def __enter__(self) -> GunicornServer:
        command = [
            sys.executable, "-m", "gunicorn", self.app,
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--threads", str(self.threads),
            "--backlog", "2048",
            "--log-level", "warning",
            "--error-logfile", "-",
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkFailed(f"gunicorn exited {self.process.returncode} while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_get_status("127.0.0.1", self.port, "/healthz") == 200:
                    return
            time.sleep(0.1)
        raise BenchmarkFailed(f"gunicorn did not answer /healthz within {self.ready_timeout:g} s:\n{self.log_tail()}")

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server: SIGTERM to the master (workers finish their request), then SIGKILL to
        whatever is left of its process group. Safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        # The group is the server's own (start_new_session): its master and workers, nothing else.
        # Whatever of it outlived the graceful stop is killed, so no worker is ever left behind.
        deadline = time.monotonic() + 2
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def workers_cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker processes so far (Linux only), else None."""
        pids = self.worker_pids()
        if not pids:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gunicorn_version() -> str:
    try:
        from importlib.metadata import version

        return version("gunicorn")
    except Exception:  # only a label in the report
        return "?"


def http_get_status(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> int:
    status, _ = request_once(host, port, build_request(host, port, path, headers))
    return status


# --- Load generator -------------------------------------------------------------------------


def build_request(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 GET that asks the server to close the connection afterwards."""
    fields = {"Host": f"{host}:{port}", "User-Agent": "switchyard-bench", "Accept": "*/*", **(headers or {}),
              "Connection": "close"}
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def request_once(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on a new connection, read until the server closes it: (status, raw response)."""
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line = raw.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else 0
    return status, raw


def _describe_response(raw: bytes) -> str:
    """Status line and the start of the body: enough to see what went wrong."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    return (status_line + b"\n" + body[:400]).decode("utf-8", "replace")


@dataclass
class PhaseResult:
    """What one endpoint did during one measured phase (or several merged)."""

    seconds: float = 0.0
    ok: int = 0
    latencies: array.array = field(default_factory=lambda: array.array("d"))
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000, method="inclusive")[round(q * 1000) - 1] * 1000

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        if self.server_cpu_seconds is None or not self.ok:
            return None
        return self.server_cpu_seconds / self.ok * 1000

    def merge(self, other: PhaseResult) -> None:
        self.seconds += other.seconds
        self.ok += other.ok
        self.latencies.extend(other.latencies)
        self.failures += other.failures
        self.failure_samples.extend(other.failure_samples[: max(0, 5 - len(self.failure_samples))])
        self.client_cpu_seconds += other.client_cpu_seconds
        if self.server_cpu_seconds is None or other.server_cpu_seconds is None:
            self.server_cpu_seconds = None
        else:
            self.server_cpu_seconds += other.server_cpu_seconds


def _client_thread(host, port, request, start_at, stop_at, out: PhaseResult, lock: threading.Lock) -> None:
    latencies = array.array("d")
    ok = failures = 0
    samples: list[str] = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    while (started := time.monotonic()) < stop_at:
        try:
            status, raw = request_once(host, port, request)
            problem = None if status == 200 else _describe_response(raw)
        except OSError as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        finished = time.monotonic()
        if problem is not None:
            failures += 1
            if len(samples) < 5:
                samples.append(problem)
        elif finished <= stop_at:  # a request still in flight at the end is not counted
            ok += 1
            latencies.append(finished - started)
    with lock:
        out.ok += ok
        out.failures += failures
        out.latencies.extend(latencies)
        out.failure_samples.extend(samples[: max(0, 5 - len(out.failure_samples))])


def _client_process(connection, host: str, port: int, threads: int) -> None:
    """A load-generator process: on each ("run", request, start_at, stop_at) message, `threads`
    closed-loop clients hammer the server until stop_at, then the tallies go back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while True:
        message = connection.recv()
        if message[0] == "stop":
            return
        _, request, start_at, stop_at = message
        result = PhaseResult(seconds=stop_at - start_at)
        lock = threading.Lock()
        cpu_before = time.process_time()
        workers = [threading.Thread(target=_client_thread, args=(host, port, request, start_at, stop_at, result, lock))
                   for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        result.client_cpu_seconds = time.process_time() - cpu_before
        connection.send(result)


class LoadGenerator:
    """Closed-loop HTTP load: `concurrency` clients, each sending one request at a time on a
    new TCP connection (no keep-alive: gunicorn's sync workers close after every response).

    The clients are spread over one process per core, so the generator's own Python is not
    held back by one GIL. It shares the CPU with the server; what it costs per request is
    measured (client CPU) and is the same for every endpoint measured with it.
    """

    def __init__(self, host: str, port: int, concurrency: int, processes: int | None = None):
        self.host, self.port = host, port
        self.concurrency = concurrency
        self.processes = max(1, min(concurrency, processes or os.cpu_count() or 1))
        self._pipes = []
        self._children = []

    @property
    def description(self) -> str:
        shares = _split(self.concurrency, self.processes)
        return f"{self.concurrency} concurrent clients ({self.processes} processes × {'/'.join(map(str, shares))} " \
               f"threads), a new TCP connection per request"

    def __enter__(self) -> LoadGenerator:
        context = multiprocessing.get_context("spawn")
        for threads in _split(self.concurrency, self.processes):
            parent_end, child_end = context.Pipe()
            child = context.Process(target=_client_process, args=(child_end, self.host, self.port, threads),
                                    daemon=True)
            child.start()
            self._pipes.append(parent_end)
            self._children.append(child)
        return self

    def __exit__(self, *exc_info) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for child in self._children:
            child.join(timeout=1)
            if child.is_alive():  # still in a run (we are unwinding from an error or a signal)
                child.terminate()
                child.join()

    def run(self, request: bytes, seconds: float, server: GunicornServer | None = None) -> PhaseResult:
        """Send `request` for `seconds` at full concurrency; the tallies of every client."""
        start_at = time.monotonic() + 0.05
        stop_at = start_at + seconds
        for pipe in self._pipes:
            pipe.send(("run", request, start_at, stop_at))
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = server.workers_cpu_seconds() if server else None
        time.sleep(max(0.0, stop_at - time.monotonic()))
        cpu_after = server.workers_cpu_seconds() if server else None
        result = PhaseResult(seconds=seconds)
        for pipe in self._pipes:
            try:
                part = pipe.recv()
            except (EOFError, OSError) as exc:
                raise BenchmarkFailed(f"a load-generator process died ({exc.__class__.__name__}); "
                                      f"its traceback is above") from None
            part.seconds = 0.0  # the processes ran side by side: the phase lasted `seconds`, not their sum
            part.server_cpu_seconds = 0.0
            result.merge(part)
        result.server_cpu_seconds = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None \
            else None
        return result


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]

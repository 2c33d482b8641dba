"""`manage.py up` end to end: a real web server, worker and beat, used as a person would.

`up` runs in a clean environment (PATH, plus DATABASE_URL and REDIS_URL when this
session has them) with its own data folder. On PostgreSQL it migrates and seeds the
DATABASE_URL database itself, not pytest's test database, so the demo may exist from
an earlier run: the tests then log in as a user they create in that database.
"""

import html.parser
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from console.demo import DEMO_OWNER_EMAIL, DEMO_TENANT_NAME, demo_seed
from tenants.models import Tenant, User

MANAGE = str(settings.BASE_DIR / "manage.py")
START_TIMEOUT = 90  # seconds until the URL line: migrations on a fresh database, three processes starting
STOP_TIMEOUT = 40  # seconds for `up` to stop everything after SIGTERM (its own limit is 20 s)
URL_LINE = re.compile(r"Switchyard is running at (http://\S+)")
PASSWORD = "up-test-horse-battery-staple"


# --- helpers ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_environment(data_dir: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "SWITCHYARD_DATA_DIR": str(data_dir)}
    for name in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1], start time [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None  # no such process


def _process_tree(root: int) -> dict[int, str]:
    """root and every process descended from it, each with its start time (tells a reused pid apart)."""
    children: dict[int, list[int]] = {}
    start_times: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            start_times[int(entry.name)] = fields[19]
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = start_times.get(pid, "")
        todo.extend(children.get(pid, []))
    return tree


def _alive(pid: int, start_time: str) -> bool:
    fields = _stat(pid)
    # A zombie has exited (only its parent's bookkeeping is left); another start time is another process.
    return fields is not None and fields[0] != "Z" and fields[19] == start_time


class UpProcess:
    """`manage.py up` as a subprocess, its output in a file (read while it runs, never blocking it)."""

    def __init__(self, tmp_path: Path, data_dir: Path):
        self.port = _free_port()
        self.data_dir = data_dir
        self.env = _clean_environment(data_dir)
        self.log_path = tmp_path / f"up-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.pids: dict[int, str] = {}  # pid -> start time, of up and everything it started

    def start(self) -> None:
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, MANAGE, "up", "--port", str(self.port), "--data-dir", str(self.data_dir)],
                # The data folder comes from --data-dir alone, as when a person runs it.
                env={name: value for name, value in self.env.items() if name != "SWITCHYARD_DATA_DIR"},
                cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def left_running(self) -> list[int]:
        return [pid for pid, start_time in self.pids.items() if _alive(pid, start_time)]

    def wait_until_running(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            match = URL_LINE.search(self.output)
            if match:
                self.pids = _process_tree(self.process.pid)
                return match.group(1)
            assert self.process.poll() is None, f"up exited with {self.process.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no URL within {START_TIMEOUT} s:\n{self.output}"
            time.sleep(0.1)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill_leftovers(self) -> None:
        """Test cleanup: nothing this test started may outlive it, whatever failed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid, start_time in self.pids.items():
            if _alive(pid, start_time):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Another manage.py command in `up`'s environment (same database, broker and data folder)."""
        return subprocess.run([sys.executable, MANAGE, *args], env=self.env, cwd=settings.BASE_DIR,
                              capture_output=True, text=True, timeout=timeout)


class _FormInputs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.inputs: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name"):
            self.inputs[attrs["name"]] = attrs.get("value") or ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surface the redirect as an HTTPError, to assert on it


def _opener(*handlers) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _opener().open(url, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _metric_samples(base_url: str) -> dict[tuple[str, tuple], float]:
    status, body = _get(base_url + "metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _demo_or_fresh_login(up: UpProcess) -> tuple[str, str]:
    """The printed demo login; without one (an earlier run seeded this database), a new owner."""
    email = re.search(r"^\s+email\s+(\S+)$", up.output, re.MULTILINE)
    password = re.search(r"^\s+password\s+(\S+)$", up.output, re.MULTILINE)
    if email and password:
        return email.group(1), password.group(1)
    assert "DATABASE_URL" in up.env, "on a fresh SQLite data folder up must seed and print the demo login"
    fresh = f"up-test-{uuid.uuid4().hex[:12]}@example.com"
    result = up.manage("create_tenant", f"Up test {fresh}", "--owner", fresh, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    return fresh, PASSWORD


def _log_in_through_the_login_page(base_url: str, email: str, password: str) -> None:
    jar = http.cookiejar.CookieJar()
    browser = _opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    login_url = urllib.parse.urljoin(base_url, "/accounts/login/")
    with browser.open(login_url, timeout=15) as response:
        assert response.status == 200
        form = _FormInputs()
        form.feed(response.read().decode())
    assert {"username", "password", "csrfmiddlewaretoken"} <= set(form.inputs), form.inputs
    body = urllib.parse.urlencode({
        "username": email, "password": password, "csrfmiddlewaretoken": form.inputs["csrfmiddlewaretoken"],
    }).encode()
    request = urllib.request.Request(login_url, data=body, headers={"Referer": login_url})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        browser.open(request, timeout=15)
    assert redirect.value.code == 302, redirect.value.read().decode()[:2000]
    location = urllib.parse.urljoin(login_url, redirect.value.headers["Location"])
    assert "/accounts/login" not in location, "the login was refused"
    with browser.open(location, timeout=15) as console:
        assert console.status == 200
        assert console.url.rstrip("/") == location.rstrip("/"), "the console sent a logged-in user elsewhere"


# --- `up` end to end -----------------------------------------------------------------------------


@pytest.mark.worker
def test_up_serves_the_console_runs_workers_and_stops_cleanly(tmp_path):
    up = UpProcess(tmp_path, tmp_path / "data")
    up.start()
    try:
        base_url = up.wait_until_running()
        assert base_url == f"http://127.0.0.1:{up.port}/"

        assert _get(base_url + "healthz") == (200, b"ok\n")

        status, body = _get(base_url + "readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"database": "ok", "broker": "ok"}

        email, password = _demo_or_fresh_login(up)
        _log_in_through_the_login_page(base_url, email, password)

        ping = up.manage("ping_worker", "--timeout", "30", timeout=60)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert re.match(r"pong in \d+ ms", ping.stdout)

        # Counted in the worker's pool process, read by the web server: one merged /metrics.
        # Celery stores the result just before it counts the success, so allow a moment.
        ping_success = ("switchyard_celery_tasks_total", (("outcome", "success"), ("task", "console.tasks.ping_task")))
        deadline = time.monotonic() + 10
        while True:
            samples = _metric_samples(base_url)
            if samples.get(ping_success, 0) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert samples.get(ping_success, 0) >= 1, sorted(samples)
        assert any(name == "django_http_requests_total_by_method_total" for name, _labels in samples)

        assert len(up.pids) >= 4, f"expected up, web server, worker and beat: {up.pids}"
        assert up.terminate() == 0, up.output
        deadline = time.monotonic() + 10
        while up.left_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not up.left_running(), "processes outlived up"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", up.port), timeout=2).close()
        assert "Switchyard stopped." in up.output
    finally:
        up.kill_leftovers()


@pytest.mark.worker
def test_up_shows_the_demo_password_only_when_it_creates_the_demo(tmp_path):
    up = UpProcess(tmp_path, tmp_path / "data")
    seeded = up.manage("migrate", "--verbosity", "0")
    assert seeded.returncode == 0, seeded.stderr
    seeded = up.manage("shell", "--command", "from console.demo import demo_seed; demo_seed()")
    assert seeded.returncode == 0, seeded.stderr
    up.start()
    try:
        up.wait_until_running()
        assert not re.search(r"^\s+password\s", up.output, re.MULTILINE), up.output
        assert ("demo tenant exists already" in up.output) or ("has tenants already" in up.output)
        assert up.terminate() == 0, up.output
    finally:
        up.kill_leftovers()


@pytest.mark.worker
def test_up_exits_non_zero_naming_the_child_that_died(tmp_path):
    up = UpProcess(tmp_path, tmp_path / "data")
    up.start()
    try:
        up.wait_until_running()
        beat = int(re.search(r"^\s+beat: pid (\d+)$", up.output, re.MULTILINE).group(1))
        os.kill(beat, signal.SIGKILL)
        assert up.process.wait(timeout=STOP_TIMEOUT) != 0
        assert "The beat (pid" in up.output and "was killed by SIGKILL unexpectedly" in up.output
        deadline = time.monotonic() + 10
        while up.left_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not up.left_running(), "processes outlived up"
    finally:
        up.kill_leftovers()


# --- the demo seed ------------------------------------------------------------------------------


def test_demo_seed_creates_a_working_login_and_api_key_once(db):
    credentials = demo_seed()
    assert credentials is not None
    assert credentials.email == DEMO_OWNER_EMAIL
    assert authenticate(username=credentials.email, password=credentials.password) is not None
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.api_key}")
    response = api.get("/api/v1/tenant")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == DEMO_TENANT_NAME

    assert demo_seed() is None
    assert Tenant.objects.count() == 1


def test_demo_seed_leaves_a_database_with_tenants_alone(tenant_a):
    assert demo_seed() is None
    assert not Tenant.objects.filter(name=DEMO_TENANT_NAME).exists()


@pytest.mark.django_db
def test_the_demo_password_is_drawn_again_when_the_validators_refuse_it(monkeypatch):
    # A real draw of secrets.token_urlsafe(12) that the similarity check refuses for the demo email.
    draws = iter(["EsTiyho5NLDeaWMO", "k3Vq9-ZpR2xWm8Tb"])
    monkeypatch.setattr("console.demo.secrets.token_urlsafe", lambda _bytes: next(draws))
    credentials = demo_seed()
    assert credentials.password == "k3Vq9-ZpR2xWm8Tb"
    assert User.objects.get(email=DEMO_OWNER_EMAIL).check_password("k3Vq9-ZpR2xWm8Tb")

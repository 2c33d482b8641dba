"""Settings as a process sees them at start: embedded by default, production refuses to guess.

Settings are read once per process, so each case runs `manage.py check` in a
subprocess with exactly the environment under test.
"""

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

MANAGE = str(settings.BASE_DIR / "manage.py")
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"  # `check --deploy` does not connect to it


def _production_env(tmp_path, **overrides) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "switchyard.example.com",
        "DATABASE_URL": POSTGRES_URL,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MANAGE, *args], env=env, cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SECRET_KEY": None}, "SECRET_KEY must be set when SWITCHYARD_ENV=production"),
    ({"SECRET_KEY": ""}, "SECRET_KEY must be set when SWITCHYARD_ENV=production"),
    ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must be set when SWITCHYARD_ENV=production"),
    ({"DATABASE_URL": None}, "DATABASE_URL must be set when SWITCHYARD_ENV=production"),
    ({"DATABASE_URL": "sqlite:////tmp/switchyard.sqlite3"}, "DATABASE_URL must point at PostgreSQL"),
])
def test_production_refuses_to_start_without_its_secrets_and_postgresql(tmp_path, overrides, message):
    result = _manage(_production_env(tmp_path, **overrides), "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_an_unknown_environment_name_is_refused(tmp_path):
    result = _manage(_production_env(tmp_path, SWITCHYARD_ENV="prod"), "check")
    assert result.returncode != 0
    assert "SWITCHYARD_ENV must be 'development' or 'production'" in result.stderr


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = _manage(_production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_needs_no_environment_at_all(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "SWITCHYARD_DATA_DIR": str(tmp_path / "data")}
    result = _manage(env, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    # The embedded defaults live in the data folder: SQLite, broker, a generated secret key.
    assert (tmp_path / "data" / "broker" / "queue").is_dir()
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0

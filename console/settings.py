"""Switchyard settings: twelve-factor, every value from the environment.

With no environment at all, Switchyard runs embedded: SQLite and an embedded
Celery broker in a data folder. `SWITCHYARD_ENV=production` refuses to start
unless the secrets and a PostgreSQL database are configured.
"""

import importlib.util
import os
import re
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from scheduler.fleet.base import fleet_config_from_env

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

SWITCHYARD_ENV = env.str("SWITCHYARD_ENV", default="development")
if SWITCHYARD_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"SWITCHYARD_ENV must be 'development' or 'production', not {SWITCHYARD_ENV!r}")
PRODUCTION = SWITCHYARD_ENV == "production"

DATA_DIR = Path(env.str("SWITCHYARD_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _require(name: str) -> None:
    if PRODUCTION and not env.str(name, default=""):
        raise ImproperlyConfigured(f"{name} must be set when SWITCHYARD_ENV=production")


for _name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"):
    _require(_name)


def _development_secret_key() -> str:
    """A random key kept in the data folder, so sessions survive a restart."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _development_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Database -------------------------------------------------------------------------------

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'switchyard.sqlite3'}")}
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if PRODUCTION and not DATABASE_IS_POSTGRES:
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL when SWITCHYARD_ENV=production")
if DATABASE_IS_POSTGRES:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    # WAL lets the web server and the workers read while one of them writes;
    # IMMEDIATE transactions take the write lock up front, so two writers queue
    # on the busy timeout instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Keep connections (opening one, with its PRAGMAs, costs more than most requests).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # Tests use a file too (not SQLite's shared-cache memory database, whose table
    # locks ignore the busy timeout), so concurrency tests see what production sees.
    # One file per test process, so parallel test runs do not meet.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and Celery ----------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

BROKER_DIR = DATA_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    # The embedded broker: kombu's filesystem transport, a folder of message files
    # shared by every process on this host. No server to run.
    for _sub in ("queue", "processed", "results", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    # A hostname is meaningless here, but without one kombu logs a warning on every connection.
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Broadcast (fanout) exchanges live here; kombu's default is ./control in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{BROKER_DIR / 'results'}"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Applications ---------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "tenants",
    "scheduler",
    "billing",
    "console",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tenants.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.console",
            ],
        },
    },
]

# --- Identity -------------------------------------------------------------------------------

AUTH_USER_MODEL = "tenants.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console-home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
INVITATION_TTL_HOURS = env.int("SWITCHYARD_INVITATION_TTL_HOURS", default=72)

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Switchyard <no-reply@switchyard.localhost>")
# Absolute links in emails (invitations, password resets) start with this.
SITE_URL = env.str("SWITCHYARD_SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

# --- Internationalisation, static files -----------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Plotly.js for the console's charts comes from the plotly package's bundle, served as
# static/vendor/plotly/plotly.min.js: from this installation, never a CDN. find_spec locates
# the package without importing it.
_plotly = importlib.util.find_spec("plotly")
if _plotly is None:
    raise ImproperlyConfigured("The plotly package is missing (a dependency in pyproject.toml): pip install -e .")
PLOTLY_JS_DIR = Path(_plotly.submodule_search_locations[0]) / "package_data"
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/plotly", PLOTLY_JS_DIR)]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production, serve static files straight from the apps: no collectstatic needed.
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- REST API -------------------------------------------------------------------------------

API_MAX_BODY_BYTES = env.int("SWITCHYARD_API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
API_RATE_LIMIT = env.str("SWITCHYARD_API_RATE_LIMIT", default="1200/minute")
# Password guessing and reset-mail flooding: counted per client address and per email address.
LOGIN_RATE_LIMIT = env.str("SWITCHYARD_LOGIN_RATE_LIMIT", default="10/minute")
PASSWORD_RESET_RATE_LIMIT = env.str("SWITCHYARD_PASSWORD_RESET_RATE_LIMIT", default="5/hour")
IDEMPOTENCY_TTL_HOURS = 24

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        # The console's browser session, with Django's CSRF check on unsafe methods.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasTenantScope"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.CredentialRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "tenants.negotiation.JsonOnlyNegotiation",
    "DEFAULT_SCHEMA_CLASS": "tenants.schema.SwitchyardAutoSchema",
    "EXCEPTION_HANDLER": "tenants.problems.problem_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "tenants.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard API",
    "DESCRIPTION": (
        "Control plane for managed AI inference. Authenticate with `Authorization: Bearer sy_live_…`. "
        "Errors are RFC 9457 problem details. POSTs honour an `Idempotency-Key` header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI's assets are served from this installation, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields named alike in several components (a node's state, a replica's state) get their own enums.
    "ENUM_NAME_OVERRIDES": {
        "NodeStateEnum": "scheduler.models.Node.State",
        "ReplicaStateEnum": "scheduler.models.Replica.State",
        "DeploymentStatusEnum": "scheduler.models.Deployment.Status",
        "WebhookDeliveryStateEnum": "tenants.models.WebhookDelivery.State",
        "InvoiceStatusEnum": "billing.models.Invoice.Status",
    },
}

# --- Scheduler ------------------------------------------------------------------------------

# Accelerators a tenant may hold on each hardware tier unless staff set another quota
# (per tenant in TenantLimits, per tier in TenantQuota).
DEFAULT_ACCELERATOR_QUOTA = env.int("SWITCHYARD_DEFAULT_ACCELERATOR_QUOTA", default=64)
if DEFAULT_ACCELERATOR_QUOTA < 0:
    raise ImproperlyConfigured("SWITCHYARD_DEFAULT_ACCELERATOR_QUOTA must be 0 or more")

# Where replicas run (scheduler/fleet): the simulated twin keeps its state under DATA_DIR
# unless SWITCHYARD_FLEET_STATE_DIR says otherwise; docs/fleet-drivers.md lists the variables.
SWITCHYARD_FLEET = {"state_dir": str(DATA_DIR / "fleet"), **fleet_config_from_env(os.environ)}
# How often Celery beat runs a reconcile pass (docs/deployments.md, "The reconcile loop").
SWITCHYARD_RECONCILE_SECONDS = env.float("SWITCHYARD_RECONCILE_SECONDS", default=5.0)
if not SWITCHYARD_RECONCILE_SECONDS > 0:
    raise ImproperlyConfigured("SWITCHYARD_RECONCILE_SECONDS must be a positive number of seconds")

# Defragmentation (docs/placement.md): at most this many replica moves per step (0: off)…
SWITCHYARD_DEFRAG_MAX_MOVES = env.int("SWITCHYARD_DEFRAG_MAX_MOVES", default=2)
if SWITCHYARD_DEFRAG_MAX_MOVES < 0:
    raise ImproperlyConfigured("SWITCHYARD_DEFRAG_MAX_MOVES must be 0 (off) or more")
# …and at most one step per this many seconds (0: off).
SWITCHYARD_DEFRAG_INTERVAL_SECONDS = env.float("SWITCHYARD_DEFRAG_INTERVAL_SECONDS", default=300.0)
if not SWITCHYARD_DEFRAG_INTERVAL_SECONDS >= 0:
    raise ImproperlyConfigured("SWITCHYARD_DEFRAG_INTERVAL_SECONDS must be 0 (off) or a positive number of seconds")

# --- Metering (docs/metering.md) ------------------------------------------------------------


def _positive_int(name: str, default: int) -> int:
    value = env.int(name, default=default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be a positive whole number")
    return value


# The oldest usage event accepted, in days; (source, id) pairs are kept at least this long.
USAGE_MAX_AGE_DAYS = _positive_int("SWITCHYARD_USAGE_MAX_AGE_DAYS", 35)
# Raw events are purged after this many days (13 months); rollups are kept for ever.
USAGE_RETENTION_DAYS = _positive_int("SWITCHYARD_USAGE_RETENTION_DAYS", 396)
if USAGE_RETENTION_DAYS < USAGE_MAX_AGE_DAYS:
    raise ImproperlyConfigured("SWITCHYARD_USAGE_RETENTION_DAYS must be at least SWITCHYARD_USAGE_MAX_AGE_DAYS: "
                               "an event id must be remembered as long as it may be sent again")
USAGE_MAX_BATCH = 1000  # events per POST /api/v1/usage/events (documented in the API)

# --- Invoicing (docs/billing.md) ------------------------------------------------------------

# The issuer printed on invoices; its country decides VAT (billing/tax.py: an EU member state).
SWITCHYARD_INVOICE_ISSUER_NAME = env.str("SWITCHYARD_INVOICE_ISSUER_NAME", default="Switchyard Cloud Ltd")
SWITCHYARD_INVOICE_ISSUER_ADDRESS = env.str("SWITCHYARD_INVOICE_ISSUER_ADDRESS", default="1 Dock Road, Dublin, Ireland")
SWITCHYARD_INVOICE_ISSUER_COUNTRY = env.str("SWITCHYARD_INVOICE_ISSUER_COUNTRY", default="IE")
SWITCHYARD_INVOICE_ISSUER_VAT_ID = env.str("SWITCHYARD_INVOICE_ISSUER_VAT_ID", default="")
# Invoice numbers are <prefix>-<year>-<6 digits>, gapless per prefix and year; credit notes <prefix>-CN-….
SWITCHYARD_INVOICE_PREFIX = env.str("SWITCHYARD_INVOICE_PREFIX", default="SY")
if not re.fullmatch(r"[A-Z][A-Z0-9]{0,9}", SWITCHYARD_INVOICE_PREFIX):
    raise ImproperlyConfigured("SWITCHYARD_INVOICE_PREFIX must be 1–10 upper-case letters or digits, e.g. SY")
SWITCHYARD_INVOICE_PAYMENT_DAYS = _positive_int("SWITCHYARD_INVOICE_PAYMENT_DAYS", 30)
# A close that claimed a draft and has not finalized it after this long crashed: the next run takes over.
SWITCHYARD_INVOICE_CLAIM_STALE_MINUTES = _positive_int("SWITCHYARD_INVOICE_CLAIM_STALE_MINUTES", 30)
# How many past months the daily close looks at (late events are accepted for 35 days).
SWITCHYARD_INVOICE_LOOKBACK_MONTHS = _positive_int("SWITCHYARD_INVOICE_LOOKBACK_MONTHS", 3)

# --- Webhooks -------------------------------------------------------------------------------

# Whether webhook URLs may point at private, loopback or link-local addresses (docs/webhooks.md).
# Allowed in development, so a receiver on this machine can be tried; in production a tenant's
# URL must not reach into the operator's own network unless this says so.
SWITCHYARD_WEBHOOK_ALLOW_PRIVATE = env.bool("SWITCHYARD_WEBHOOK_ALLOW_PRIVATE", default=not PRODUCTION)

# --- Operations -----------------------------------------------------------------------------

# /metrics answers staff users and these networks (the Prometheus scraper's).
METRICS_ALLOWED_NETWORKS = env.list("SWITCHYARD_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
PROMETHEUS_EXPORT_MIGRATIONS = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production hardening (`manage.py check --deploy` is clean) -----------------------------

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

"""Settings for the live tracker map.

Every knob is an environment variable with a default that makes a fresh
checkout run on one machine (SQLite, in-memory channel layer). Settings that
would be dangerous in production fail loudly at start instead of quietly
falling back. `.env.example` and the README list every variable.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from tracking.redaction import redacted_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_dotenv(path: Path, *, named: bool) -> None:
    """Read ``KEY=VALUE`` lines from ``.env`` into the environment, which wins.

    Blank lines and ``#`` comments are skipped; a value may be quoted. A file
    ``named`` by ``ENV_FILE`` must exist: a typo would otherwise start the
    process on the defaults.
    """
    if not path.exists():
        if named:
            raise ImproperlyConfigured(
                f"ENV_FILE must name an existing file of KEY=VALUE lines, got {str(path)!r} "
                "(unset it to read .env beside manage.py)"
            )
        return
    if path.is_dir():
        raise ImproperlyConfigured(f"ENV_FILE must name a file, got the folder {str(path)!r}")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.removeprefix("export ").partition("=")
        if not separator or not key.strip():
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)


# The test suite makes its own settings: the .env of a developer or an operator
# must not point it at real services (a test that wants one names ENV_FILE).
_UNDER_PYTEST = "pytest" in sys.modules
_ENV_FILE = os.environ.get("ENV_FILE", "")
if _ENV_FILE or not _UNDER_PYTEST:
    _load_dotenv(Path(_ENV_FILE or BASE_DIR / ".env"), named=bool(_ENV_FILE))

# Runs on a developer's machine: the embedded demo, Django's development server
# and the test suite. Only these start with DEBUG on when it is unset; anything
# else (a web server, consume_events) starts as production.
_DEVELOPMENT_RUN = _UNDER_PYTEST or sys.argv[1:2] in (["demo"], ["runserver"])

# A key that is fine on a laptop; Django's deployment check knows the prefix.
_DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _env_number(
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float = math.inf,
    integer: bool = True,
) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    kind = "an integer" if integer else "a number"
    # int() and float() also take "1_000" and other scripts' digits; a setting
    # is written plainly.
    try:
        if "_" in raw or not raw.isascii():
            raise ValueError(raw)
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        allowed = (
            f"of at least {_plain(minimum)}"
            if math.isinf(maximum)
            else f"from {_plain(minimum)} to {_plain(maximum)}"
        )
        raise ImproperlyConfigured(f"{name} must be {kind} {allowed}, got {raw!r}")
    return value


def _plain(number: float) -> str:
    """A bound as a person writes it: 1000000, 0.5 (no exponent, no ".0")."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core ------------------------------------------------------------------

# Variables that used to mean something: refused, so that an old .env does
# not quietly lose its effect.
_REPLACED = {
    "SECURE_COOKIES": "SESSION_COOKIE_SECURE and CSRF_COOKIE_SECURE",
    "MAP_LOGIN_REQUIRED": "MAP_PUBLIC (with DEBUG=0 the map needs a signed-in user unless MAP_PUBLIC=1)",
}
for _old, _new in _REPLACED.items():
    if _old in os.environ:
        raise ImproperlyConfigured(f"{_old} is no longer read: use {_new}")

DEBUG = _env_bool("DEBUG", _DEVELOPMENT_RUN)
# Unset, a key fit for one laptop: commands that sign nothing (migrate,
# consume_events) run with it, but a web server with DEBUG off refuses to
# start with it (tracker_site/startup.py) and `check --deploy` flags it.
SECRET_KEY = os.environ.get("SECRET_KEY", "") or _DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must name the host names served (comma-separated) when DEBUG is off"
    )
for _host in ALLOWED_HOSTS:
    if "/" in _host:
        raise ImproperlyConfigured(
            f"ALLOWED_HOSTS must be host names such as map.example.com, not URLs, got {_host!r}"
        )
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS must be origins such as https://map.example.com, got {_origin!r}"
        )

# HTTPS. With DEBUG off, plain HTTP is redirected and cookies go over HTTPS
# only; HSTS and the proxy's header are the operator's to state.
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS: int = _env_number("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)


def _proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """``HTTP_X_FORWARDED_PROTO,https``: the header (as Django names it in
    ``request.META``) and the value by which the proxy says it was HTTPS."""
    if not raw.strip():
        return None
    header, _, value = (part.strip() for part in raw.partition(","))
    if not re.fullmatch(r"HTTP_[A-Z0-9_]+", header) or not value or "," in value:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be 'HTTP_HEADER_NAME,value', "
            f"e.g. HTTP_X_FORWARDED_PROTO,https, got {raw!r}"
        )
    return header, value


# Set only behind a proxy that sets this header itself on every request.
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(os.environ.get("SECURE_PROXY_SSL_HEADER", ""))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "tracking",
    "maps",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tracker_site.storage.StaticFiles",
    # Before anything reads the query or the session cookie (tracker_site/nul.py).
    "tracker_site.nul.refuse_nul",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tracker_site.urls"

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
            ],
        },
    },
]

ASGI_APPLICATION = "tracker_site.asgi.application"

# --- Database --------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
try:
    _database = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=_env_number("DATABASE_CONN_MAX_AGE", 600, minimum=0),
        conn_health_checks=True,
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django knows: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the map read while the pipeline writes; IMMEDIATE takes the
    # write lock at BEGIN so two writers queue instead of failing mid-batch.
    _database["CONN_MAX_AGE"] = 0
    _database["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ---------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# Keys and channels in Redis start with this, so deployments can share one Redis.
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "") or "tracker"
CHANNEL_LAYER_CAPACITY = _env_number("CHANNEL_LAYER_CAPACITY", 1000, minimum=10)
# core: channels-redis's list-per-channel layer; pubsub: its Redis pub/sub
# layer, one PUBLISH per group and one copy per web process. Only read with
# REDIS_URL, but checked always: a typo shows before Redis is added.
CHANNEL_LAYER_BACKEND = os.environ.get("CHANNEL_LAYER_BACKEND", "") or "pubsub"
_LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
if CHANNEL_LAYER_BACKEND not in _LAYER_BACKENDS:
    raise ImproperlyConfigured(
        f"CHANNEL_LAYER_BACKEND must be 'core' or 'pubsub', got {CHANNEL_LAYER_BACKEND!r}"
    )
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            "REDIS_URL must start with redis://, rediss:// or unix://, "
            f"got {redacted_url(REDIS_URL)!r}"
        )
    # redis-py's defaults (5 s reads, 100 connections) drop idle receivers
    # and refuse bursts of group calls.
    _layer_config: dict[str, Any] = {
        "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "max_connections": 500}],
        "prefix": CHANNEL_LAYER_PREFIX,
    }
    if CHANNEL_LAYER_BACKEND == "core":
        _layer_config.update(capacity=CHANNEL_LAYER_CAPACITY, expiry=30)
    CHANNEL_LAYERS = {
        "default": {"BACKEND": _LAYER_BACKENDS[CHANNEL_LAYER_BACKEND], "CONFIG": _layer_config}
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_LAYER_CAPACITY, "expiry": 30},
        }
    }

# --- Auth, i18n, static ----------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
# How long an API token made without an explicit expiry lasts (tracking/api_tokens.py).
API_TOKEN_DAYS: int = _env_number("API_TOKEN_DAYS", 90, minimum=1, maximum=36_500)
# Sign-in is throttled by django-axes: after AXES_FAILURE_LIMIT wrong passwords
# from one address, that address is refused for AXES_COOLOFF_TIME hours.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT: int = _env_number("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME: float = _env_number("AXES_COOLOFF_TIME", 1.0, minimum=0.01, integer=False)
AXES_RESET_ON_SUCCESS = True
# One line per failure and lockout, not a banner at every start.
AXES_VERBOSE = False
# A lockout line names the address locked out (what an operator acts on); the
# username stays masked (a password typed into it would land in the log).
AXES_SENSITIVE_PARAMETERS = ["username"]
# The address that counts is REMOTE_ADDR, the client's as the ASGI server gives
# it (uvicorn takes it from a trusted proxy's X-Forwarded-For).

# Error reports (the debug page, mails to ADMINS) hide every setting that can
# carry a password or a key.
DEFAULT_EXCEPTION_REPORTER_FILTER = "tracker_site.error_reports.SettingsFilter"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic writes here; under DEBUG the files are served from the apps
# instead, so the folder is only used when it exists.
_static_root = Path(os.environ.get("STATIC_ROOT", "") or BASE_DIR / "staticfiles")
STATIC_ROOT = _static_root if not DEBUG or _static_root.is_dir() else None
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "tracker_site.storage.StaticStorage"
        )
    },
}
# Without collectstatic (the demo, tests), servestatic serves from the finders.
SERVESTATIC_USE_FINDERS = DEBUG

# --- Map page ----------------------------------------------------------------

# Leave MAP_TILE_URL empty for no tiles: the bundled land outline still shows.
MAP_TILE_URL = os.environ.get("MAP_TILE_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
if MAP_TILE_URL and (
    not MAP_TILE_URL.startswith(("https://", "http://"))
    or not all(part in MAP_TILE_URL for part in ("{z}", "{x}", "{y}"))
):
    raise ImproperlyConfigured(
        "MAP_TILE_URL must be an http(s) URL template with {z}, {x} and {y} "
        "(e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png) or empty for no tiles, "
        f"got {redacted_url(MAP_TILE_URL)!r}"
    )
MAP_TILE_ATTRIBUTION = os.environ.get(
    "MAP_TILE_ATTRIBUTION",
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
)
# With DEBUG off the map, its API and the hub are for signed-in users unless
# the operator makes the map public (read-only: nobody can change anything).
MAP_PUBLIC = _env_bool("MAP_PUBLIC", DEBUG)
# Where the map opens, "latitude,longitude" (latitude first), and at what zoom.
_center_raw = os.environ.get("MAP_CENTER", "") or "60.1699,24.9384"
try:
    if not _center_raw.isascii():
        raise ValueError(_center_raw)
    MAP_CENTER_LATITUDE, MAP_CENTER_LONGITUDE = (
        float(part) for part in _center_raw.split(",") if part.strip()
    )
except ValueError:
    MAP_CENTER_LATITUDE = MAP_CENTER_LONGITUDE = math.nan
if not (-90 <= MAP_CENTER_LATITUDE <= 90 and -180 <= MAP_CENTER_LONGITUDE <= 180):
    raise ImproperlyConfigured(
        "MAP_CENTER must be 'latitude,longitude' (latitude first) within [-90, 90] and "
        f"[-180, 180], got {_center_raw!r}"
    )
# Leaflet's zoom levels: 0 (the world) to about 20 for street tiles.
MAP_ZOOM: int = _env_number("MAP_ZOOM", 13, minimum=0, maximum=24)
# How far back a selected tracker's trail reaches on the map, and the default
# range of GET /api/trackers/{id}/positions.
MAP_TRAIL_MINUTES: int = _env_number("MAP_TRAIL_MINUTES", 10, minimum=1, maximum=1440)

# --- Tracking domain -------------------------------------------------------

TRACKING_GRID_DEGREES: float = _env_number(
    "TRACKING_GRID_DEGREES", 1.0, minimum=0.01, integer=False
)
for _span in (180.0, 360.0):
    _cells = _span / TRACKING_GRID_DEGREES
    if abs(_cells - round(_cells)) > 1e-9:
        raise ImproperlyConfigured(
            f"TRACKING_GRID_DEGREES must divide 180 and 360 evenly, got {TRACKING_GRID_DEGREES}"
        )
TRACKING_MAX_CELLS_PER_CONNECTION: int = _env_number(
    "TRACKING_MAX_CELLS_PER_CONNECTION", 50, minimum=1
)
TRACKING_AUTO_REGISTER: bool = _env_bool("TRACKING_AUTO_REGISTER", True)
TRACKING_MAX_FUTURE_SECONDS: int = _env_number("TRACKING_MAX_FUTURE_SECONDS", 300, minimum=0)
TRACKING_MAX_EVENT_BYTES: int = _env_number("TRACKING_MAX_EVENT_BYTES", 16384, minimum=64)
TRACKING_REJECTED_BODY_CHARS: int = _env_number("TRACKING_REJECTED_BODY_CHARS", 2000, minimum=16)
TRACKING_REJECTED_KEEP: int = _env_number("TRACKING_REJECTED_KEEP", 100_000, minimum=100)
# Rejected bodies stored per minute and process; beyond it they are only counted (0: none stored).
TRACKING_REJECTED_STORE_PER_MINUTE: int = _env_number(
    "TRACKING_REJECTED_STORE_PER_MINUTE", 600, minimum=0
)
# History kept (tracking/retention.py): positions, rejected events and finished
# visits older than this many days are removed (0 keeps everything). On
# PostgreSQL whole day partitions are dropped, so a day's rows stay until the
# whole day is past the limit (up to a day longer).
TRACKING_HISTORY_DAYS: int = _env_number("TRACKING_HISTORY_DAYS", 30, minimum=0, maximum=36_500)
# How often consume_events prunes by itself (and once soon after it starts).
TRACKING_HISTORY_PRUNE_SECONDS: float = _env_number(
    "TRACKING_HISTORY_PRUNE_SECONDS", 3600.0, minimum=1, maximum=7 * 86_400, integer=False
)
# Geofences (tracking/geofences.py, tracking/ingest/geofencing.py). A tracker
# leaves a fence only this far outside it: above the spread of GPS noise.
GEOFENCE_EXIT_MARGIN_M: float = _env_number(
    "GEOFENCE_EXIT_MARGIN_M", 40.0, minimum=0, maximum=10_000, integer=False
)
# An entry counts once the tracker has stayed inside this long (0: at once).
GEOFENCE_MIN_DWELL_SECONDS: float = _env_number(
    "GEOFENCE_MIN_DWELL_SECONDS", 0.0, minimum=0, maximum=86_400, integer=False
)
# Check the straight line between two reports, so a tracker that jumps across
# a small fence between sparse reports enters and leaves it.
GEOFENCE_CHECK_SEGMENTS: bool = _env_bool("GEOFENCE_CHECK_SEGMENTS", False)
# How often consume_events looks for fences added, edited or removed.
GEOFENCE_RELOAD_SECONDS: float = _env_number(
    "GEOFENCE_RELOAD_SECONDS", 2.0, minimum=0.1, maximum=3_600, integer=False
)
TRACKING_ONLINE_SECONDS: int = _env_number("TRACKING_ONLINE_SECONDS", 60, minimum=1)
TRACKING_OFFLINE_SECONDS: int = _env_number("TRACKING_OFFLINE_SECONDS", 900, minimum=1)
if TRACKING_OFFLINE_SECONDS < TRACKING_ONLINE_SECONDS:
    raise ImproperlyConfigured(
        "TRACKING_OFFLINE_SECONDS must not be less than TRACKING_ONLINE_SECONDS"
    )
# How often a web process sends the overview (trackers counted by area) to the
# connections watching it: one database query per period while anyone watches.
TRACKING_OVERVIEW_SECONDS: float = _env_number(
    "TRACKING_OVERVIEW_SECONDS", 5.0, minimum=0.5, maximum=3_600, integer=False
)
# Trips and stops (tracking/trips.py, GET /api/trackers/{id}/trips). A stop is
# staying within TRACKING_STOP_RADIUS_M of one point for TRACKING_STOP_MIN_SECONDS:
# 100 m holds a parked device's GPS noise (5-30 m in the open, more between
# buildings) and is still a street's length; 300 s is traccar's
# minimalParkingDuration: a traffic light or a queue does not cut a trip, a
# delivery does.
TRACKING_STOP_RADIUS_M: float = _env_number(
    "TRACKING_STOP_RADIUS_M", 100.0, minimum=5, maximum=10_000, integer=False
)
TRACKING_STOP_MIN_SECONDS: float = _env_number(
    "TRACKING_STOP_MIN_SECONDS", 300.0, minimum=10, maximum=86_400, integer=False
)
# A movement is a trip only if it takes the tracker this far (straight line) from
# where it started: traccar's minimalTripDistance, above GPS noise and a car moved
# across a car park.
TRACKING_TRIP_MIN_DISTANCE_M: float = _env_number(
    "TRACKING_TRIP_MIN_DISTANCE_M", 500.0, minimum=1, maximum=1_000_000, integer=False
)
# Silence longer than this while the tracker moved ends its trip (the road in
# between is unknown). 900 s is when the map calls a tracker offline
# (TRACKING_OFFLINE_SECONDS): a device reporting every few minutes may miss two
# reports without cutting its trip in two. Silence at one place is part of a stop.
TRACKING_TRIP_GAP_SECONDS: float = _env_number(
    "TRACKING_TRIP_GAP_SECONDS", 900.0, minimum=1, maximum=86_400, integer=False
)
TRACKING_BATCH_SIZE: int = _env_number("TRACKING_BATCH_SIZE", 5000, minimum=1)
TRACKING_BATCH_WAIT_MS: int = _env_number("TRACKING_BATCH_WAIT_MS", 200, minimum=0)
TRACKING_PROGRESS_SECONDS: float = _env_number(
    "TRACKING_PROGRESS_SECONDS", 10.0, minimum=0.1, integer=False
)

# --- Azure Event Hubs (consume_events --source eventhub, simulate --to eventhub) ---

# A connection string, or a namespace (mynamespace.servicebus.windows.net) to
# sign in to with azure-identity's default credential (a managed identity).
EVENTHUB_CONNECTION_STRING = os.environ.get("EVENTHUB_CONNECTION_STRING", "")
EVENTHUB_NAMESPACE = os.environ.get("EVENTHUB_NAMESPACE", "")
# Optional when the connection string has EntityPath=.
EVENTHUB_NAME = os.environ.get("EVENTHUB_NAME", "")
EVENTHUB_CONSUMER_GROUP = os.environ.get("EVENTHUB_CONSUMER_GROUP", "$Default")
# Where a partition without a checkpoint starts: earliest or latest.
EVENTHUB_STARTING_POSITION = os.environ.get("EVENTHUB_STARTING_POSITION", "earliest")
EVENTHUB_BATCH_SIZE: int = _env_number("EVENTHUB_BATCH_SIZE", 500, minimum=1)
EVENTHUB_MAX_WAIT_SECONDS: float = _env_number(
    "EVENTHUB_MAX_WAIT_SECONDS", 1.0, minimum=0.01, integer=False
)
EVENTHUB_PREFETCH: int = _env_number("EVENTHUB_PREFETCH", 1000, minimum=1)
EVENTHUB_LOAD_BALANCING_SECONDS: float = _env_number(
    "EVENTHUB_LOAD_BALANCING_SECONDS", 5.0, minimum=0.1, integer=False
)
EVENTHUB_OWNERSHIP_EXPIRY_SECONDS: float = _env_number(
    "EVENTHUB_OWNERSHIP_EXPIRY_SECONDS", 20.0, minimum=0.5, integer=False
)

# --- SignalR hub -------------------------------------------------------------

HUB_PING_SECONDS: float = _env_number("HUB_PING_SECONDS", 15.0, minimum=0.1, integer=False)
HUB_CLIENT_TIMEOUT_SECONDS: float = _env_number(
    "HUB_CLIENT_TIMEOUT_SECONDS", 30.0, minimum=1, integer=False
)
HUB_HANDSHAKE_TIMEOUT_SECONDS: float = _env_number(
    "HUB_HANDSHAKE_TIMEOUT_SECONDS", 15.0, minimum=0.1, integer=False
)
HUB_MAX_MESSAGE_BYTES: int = _env_number("HUB_MAX_MESSAGE_BYTES", 32768, minimum=1024)
# How updates reach the web processes: "cells" (one Redis pub/sub channel per
# cell, or in-process without Redis) or "channel-layer" (a channels group per
# cell). See tracking/hub/fanout/ and BENCHMARKS.md.
HUB_FANOUT = os.environ.get("HUB_FANOUT", "") or "cells"
if HUB_FANOUT not in {"cells", "channel-layer"}:
    raise ImproperlyConfigured(f"HUB_FANOUT must be 'cells' or 'channel-layer', got {HUB_FANOUT!r}")
# How often each web process re-checks what signed in its open hub connections
# (an API token, a session), closing those whose token was revoked or expired
# or whose user signed out (tracking/hub/sign_in.py).
HUB_CREDENTIAL_CHECK_SECONDS: float = _env_number(
    "HUB_CREDENTIAL_CHECK_SECONDS", 15.0, minimum=0.1, integer=False
)
HUB_COALESCE_MS: float = _env_number("HUB_COALESCE_MS", 20.0, minimum=0, integer=False)
# What one slow viewer may cost: the updates waiting for it (newest per tracker)
# and how long a send may stall before the connection is cut off.
HUB_OUTBOX_BYTES: int = _env_number("HUB_OUTBOX_BYTES", 1_048_576, minimum=16384)
HUB_SEND_STALL_SECONDS: float = _env_number(
    "HUB_SEND_STALL_SECONDS", 30.0, minimum=0.5, integer=False
)
# What one client may ask: invocations per WebSocket message, and a token
# bucket of invocations (a burst, then a rate); connections per process.
HUB_MAX_INVOCATIONS_PER_MESSAGE: int = _env_number("HUB_MAX_INVOCATIONS_PER_MESSAGE", 5, minimum=1)
HUB_INVOCATIONS_PER_SECOND: float = _env_number(
    "HUB_INVOCATIONS_PER_SECOND", 5.0, minimum=0.1, integer=False
)
HUB_INVOCATION_BURST: int = _env_number("HUB_INVOCATION_BURST", 20, minimum=1)
HUB_MAX_CONNECTIONS: int = _env_number("HUB_MAX_CONNECTIONS", 10000, minimum=1)

# --- Logging -------------------------------------------------------------------

LOG_LEVEL = (os.environ.get("LOG_LEVEL", "") or "INFO").strip().upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(f"LOG_LEVEL must be a logging level name, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    # Every line goes through the redaction: no password in a log, whatever road
    # it took into a message (an exception's text, a mistyped URL).
    "filters": {
        "redact": {"()": "tracking.redaction.RedactingFilter"},
        "one_line_per_websocket": {"()": "tracker_site.log_filters.OneLinePerWebSocket"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (its console under DEBUG, mail to ADMINS) go:
        # its lines reach the console above, once, through the redaction.
        "django": {"level": "INFO"},
        # Daphne logs every HTTP request at INFO; keep the console readable.
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # uvicorn: one line per WebSocket, without its query (tracker_site/log_filters.py).
        "uvicorn.error": {"filters": ["one_line_per_websocket"]},
        # django-axes: lockouts (WARNING), not four lines per successful sign-in.
        "axes": {"level": "WARNING"},
        # The Azure SDK narrates every link state change at INFO.
        "azure": {"level": "WARNING"},
    },
}

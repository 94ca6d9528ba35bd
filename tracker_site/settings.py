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
import sys
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_dotenv(path: Path) -> None:
    """Read ``KEY=VALUE`` lines from ``.env`` into the environment, which wins.

    Blank lines and ``#`` comments are skipped; a value may be quoted.
    """
    if not path.is_file():
        return
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
_ENV_FILE = os.environ.get("ENV_FILE", "")
if _ENV_FILE or "pytest" not in sys.modules:
    _load_dotenv(Path(_ENV_FILE or BASE_DIR / ".env"))

# A key that is fine on a laptop and refused in production (see the check below).
_DEVELOPMENT_SECRET_KEY = "development-only-insecure-key-do-not-use-in-production"


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


def _env_number(name: str, default: float, *, minimum: float, integer: bool = True) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core ------------------------------------------------------------------

DEBUG = _env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "") or _DEVELOPMENT_SECRET_KEY
if not DEBUG and (SECRET_KEY == _DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "DEBUG is off but SECRET_KEY is unset or shorter than 32 characters. "
        "Set SECRET_KEY to a long random value, for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "tracking",
    "maps",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "tracker")
CHANNEL_LAYER_CAPACITY = _env_number("CHANNEL_LAYER_CAPACITY", 1000, minimum=10)
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}"
        )
    # core: channels-redis's list-per-channel layer; pubsub: its Redis pub/sub
    # layer, one PUBLISH per group and one copy per web process.
    CHANNEL_LAYER_BACKEND = os.environ.get("CHANNEL_LAYER_BACKEND", "pubsub")
    # redis-py's defaults (5 s reads, 100 connections) drop idle receivers
    # and refuse bursts of group calls.
    _layer_config: dict[str, Any] = {
        "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "max_connections": 500}],
        "prefix": CHANNEL_LAYER_PREFIX,
    }
    if CHANNEL_LAYER_BACKEND == "core":
        _layer_backend = "channels_redis.core.RedisChannelLayer"
        _layer_config.update(capacity=CHANNEL_LAYER_CAPACITY, expiry=30)
    elif CHANNEL_LAYER_BACKEND == "pubsub":
        _layer_backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
    else:
        raise ImproperlyConfigured(
            f"CHANNEL_LAYER_BACKEND must be 'core' or 'pubsub', got {CHANNEL_LAYER_BACKEND!r}"
        )
    CHANNEL_LAYERS = {"default": {"BACKEND": _layer_backend, "CONFIG": _layer_config}}
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
# Without collectstatic (the demo, tests), whitenoise serves from the finders.
WHITENOISE_USE_FINDERS = _env_bool("WHITENOISE_USE_FINDERS", DEBUG)

if not DEBUG:
    SESSION_COOKIE_SECURE = _env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Map page ----------------------------------------------------------------

# Leave MAP_TILE_URL empty for no tiles: the bundled land outline still shows.
MAP_TILE_URL = os.environ.get("MAP_TILE_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
MAP_TILE_ATTRIBUTION = os.environ.get(
    "MAP_TILE_ATTRIBUTION",
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
)
MAP_LOGIN_REQUIRED = _env_bool("MAP_LOGIN_REQUIRED", False)
# Where the map opens, "latitude,longitude" (latitude first), and at what zoom.
_center = _env_list("MAP_CENTER", "60.1699,24.9384")
try:
    MAP_CENTER_LATITUDE, MAP_CENTER_LONGITUDE = (float(part) for part in _center)
except ValueError:
    raise ImproperlyConfigured(
        f"MAP_CENTER must be 'latitude,longitude', got {','.join(_center)!r}"
    ) from None
if not (-90 <= MAP_CENTER_LATITUDE <= 90 and -180 <= MAP_CENTER_LONGITUDE <= 180):
    raise ImproperlyConfigured(
        "MAP_CENTER must be 'latitude,longitude' within [-90, 90] and [-180, 180]"
    )
MAP_ZOOM: int = _env_number("MAP_ZOOM", 13, minimum=0)

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
TRACKING_ONLINE_SECONDS: int = _env_number("TRACKING_ONLINE_SECONDS", 60, minimum=1)
TRACKING_OFFLINE_SECONDS: int = _env_number("TRACKING_OFFLINE_SECONDS", 900, minimum=1)
if TRACKING_OFFLINE_SECONDS < TRACKING_ONLINE_SECONDS:
    raise ImproperlyConfigured(
        "TRACKING_OFFLINE_SECONDS must not be less than TRACKING_ONLINE_SECONDS"
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
HUB_FANOUT = os.environ.get("HUB_FANOUT", "cells")
if HUB_FANOUT not in {"cells", "channel-layer"}:
    raise ImproperlyConfigured(f"HUB_FANOUT must be 'cells' or 'channel-layer', got {HUB_FANOUT!r}")
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

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(f"LOG_LEVEL must be a logging level name, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Daphne logs every HTTP request at INFO; keep the console readable.
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # The Azure SDK narrates every link state change at INFO.
        "azure": {"level": "WARNING"},
    },
}

"""Django settings, read from the environment (12-factor, django-environ).

The defaults are embedded so a fresh clone runs with no server: SQLite, a Celery transport on the
local filesystem and media on local disk, all under ``var/``. Production sets ``LANDMARKS_PRODUCTION=true``
together with ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``SECRET_KEY``; see README.md.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("LANDMARKS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = env.bool("LANDMARKS_PRODUCTION", default=False)
DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment; outside production, a per-install key kept in var/."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when LANDMARKS_PRODUCTION=true")
    from webapp.secret import load_or_create_secret_key

    return load_or_create_secret_key(VAR_DIR / "secret_key")


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "easy_thumbnails",
    "django_celery_results",
    "axes",
    "webapp.catalog",
    "webapp.jobs",
    "webapp.search",
    "webapp.curation",
    "webapp.api",
    "webapp.limits",
    "worker",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.middleware.DatabaseUnavailableMiddleware",  # a database outage answers 503, not 500
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view is marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # answers a locked-out login with the lockout page; stays last
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
                "webapp.curation.context_processors.roles",
            ],
        },
    },
]

# --- Database: SQLite in var/ unless DATABASE_URL says otherwise (PostgreSQL in production).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file (not :memory:) test database, so a real worker process can share it with the tests;
    # a generous timeout because the web process and the worker write to it at the same time.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL;"
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# --- Login throttling (django-axes): LOGIN_FAILURE_LIMIT failed logins in a row for one account, or from one
# address, lock logins for that account or address for LOGIN_LOCKOUT_MINUTES (each further try restarts the
# wait). Counted in the database, so every web process sees the same count; a login that succeeds resets it.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own: per account and per address
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "webapp.accounts.locked_out"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (whitenoise serves them, also with DEBUG off) and media.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": env.str("MEDIA_STORAGE", default="django.core.files.storage.FileSystemStorage")},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Large derived artefacts (checkpoints, embeddings, indexes) live on local disk beside the workers.
ARTIFACTS_ROOT = Path(env.str("ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts")))

# --- Thumbnails: easy-thumbnails, made once and cached (its Source/Thumbnail tables remember them).
THUMBNAIL_ALIASES = {"": {"thumb": {"size": (256, 256), "crop": "smart", "quality": 82},
                          "preview": {"size": (1024, 1024), "crop": False, "quality": 85}}}
THUMBNAIL_SUBDIR = ""
THUMBNAIL_BASEDIR = "thumbs"
THUMBNAIL_CHECK_CACHE_MISS = True

# Anyone may search (web page and API) without an account when true; everything else needs a login.
SEARCH_PUBLIC = env.bool("SEARCH_PUBLIC", default=False)
# Searches by photo (upload, API, search again) per user (or address) per minute, counted in the database
# that every web process shares; 0 = off.
SEARCH_RATE_LIMIT = env.int("SEARCH_RATE_LIMIT", default=60)
# When another index version becomes active, each web process loads it in the background and answers from the
# version it has meanwhile ("background"), or makes searches wait for the load ("blocking"; the test suite's).
SEARCH_ENGINE_SWAP = env.str("SEARCH_ENGINE_SWAP", default="background")
if SEARCH_ENGINE_SWAP not in ("background", "blocking"):
    raise ImproperlyConfigured(f"SEARCH_ENGINE_SWAP must be 'background' or 'blocking', not {SEARCH_ENGINE_SWAP!r}")
# Django's cache. Nothing that must hold across web processes lives in it: rate limits and login throttling
# count in the database (webapp.limits, django-axes).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# Folders the web forms may import or evaluate from (server paths; nothing outside them).
IMPORT_ROOTS = env.list("IMPORT_ROOTS", default=[str(BASE_DIR.parent)])

# --- Index builds: vectors per shard; each shard is indexed by its own task (a small collection is one shard).
INDEX_SHARD_SIZE = env.int("INDEX_SHARD_SIZE", default=250_000)
# --- Cleaning: kNN pairs spatially verified per task (RootSIFT + MAGSAC, ~10 ms a pair on one core); a clean
# job with more pairs than this verifies them in chunks, one task each, on every cpu worker.
CLEAN_CHUNK_PAIRS = env.int("CLEAN_CHUNK_PAIRS", default=2000)
# --- Embedding chunks (build_index's, and embed's when not given): how the worker that runs a chunk decodes
# and batches. Per worker, since workers differ: a GPU worker wants batches of 32 and 8 decode processes; a
# small idle CPU is fastest decoding in its own process (0), which leaves every core to torch.
EMBED_BATCH_SIZE = env.int("EMBED_BATCH_SIZE", default=1)
EMBED_DECODE_WORKERS = env.int("EMBED_DECODE_WORKERS", default=1)
# --- Training jobs: a checkpoint every this many steps (unless the job sets its own), so a job whose worker
# died resumes from the last one instead of starting again; only the newest is kept while it runs.
TRAIN_CHECKPOINT_EVERY = env.int("TRAIN_CHECKPOINT_EVERY", default=500)

# --- Image limits: what import and upload accept.
IMAGE_MAX_BYTES = env.int("IMAGE_MAX_BYTES", default=50 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("IMAGE_MAX_PIXELS", default=64_000_000)
IMAGE_MIN_SIDE = env.int("IMAGE_MIN_SIDE", default=16)

# --- Celery: a filesystem transport needs no broker server; production points CELERY_BROKER_URL at Redis.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_FOLDER = Path(env.str("CELERY_BROKER_FOLDER", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_FOLDER.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER),
        "data_folder_out": str(CELERY_BROKER_FOLDER),
        "processed_folder": str(CELERY_BROKER_FOLDER / "processed"),
        "control_folder": str(CELERY_BROKER_FOLDER / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True  # Job rows carry state, progress and results ...
# ... except for the chunk tasks a chord waits on: their results go to the Django database (any backend),
# through a backend that waits out a database outage instead of ending the worker (worker/results.py):
# retries with backoff up to 10 s apart, about 10 minutes in all, as long as a chunk waits for the database.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="worker.results:PatientDatabaseBackend")
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS = 200
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 10_000
CELERY_RESULT_BACKEND_MAX_RETRIES = 120
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=24 * 3600)  # hard stop for a stuck task
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=23 * 3600)
# A failed publish (broker down) gives up quickly; the job stays queued and the watchdog sends it again.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_CONNECTION_TIMEOUT = 3
# The watchdog runs on the workers' embedded beat (`celery worker -B`): it resumes jobs whose worker died
# (no heartbeat for JOB_STALE_SECONDS) and re-sends queued jobs whose message was lost.
JOB_STALE_SECONDS = env.int("JOB_STALE_SECONDS", default=300)
CELERY_BEAT_SCHEDULE = {"watchdog": {"task": "worker.watchdog", "schedule": env.int("WATCHDOG_SECONDS", default=60)}}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_ACKS_LATE = True  # a job whose worker dies is delivered again, not lost
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Mail (password reset links). With no mail server configured, the console backend writes each message
# to the server's log, and the reset pages say so; set EMAIL_BACKEND (smtp) and EMAIL_HOST to send real mail.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="landmarks@localhost")

# --- Security. Production mode turns on what `manage.py check --deploy` asks for.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"PIL": {"level": "WARNING"}, "axes": {"level": "WARNING"}},  # axes: a line per login otherwise
}

"""Settings shared by every environment; each value comes from the environment.

Each integration (S3, SMTP, Redis/Celery, Stripe, Mailchimp) switches on by its own
variable and otherwise falls back to a local default that needs no server.
"""

from pathlib import Path

import environ

from core import csp as _csp

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("LODESTONE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(env_file)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# How many reverse proxies (nginx, a CDN) stand in front of the app and append to
# X-Forwarded-For; 0 trusts only REMOTE_ADDR. Production's default is 1 (nginx).
TRUSTED_PROXY_COUNT = env.int("LODESTONE_TRUSTED_PROXY_COUNT", default=0)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("LODESTONE_SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
WAGTAILADMIN_BASE_URL = SITE_URL

INSTALLED_APPS = [
    # Our apps first so their templates override allauth's and Wagtail's.
    "core",
    "accounts",
    "funnels",
    "courses",
    "payments",
    "webinars",
    "media.apps.MediaConfig",
    "wagtail.contrib.forms",
    "wagtail.contrib.routable_page",
    "wagtail.contrib.redirects",
    "wagtail.contrib.settings",
    "wagtail.embeds",
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "allauth",
    "allauth.account",
    "csp",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
]

MIDDLEWARE = [
    # First, so it sees every cookie the others set: who may cache the response.
    "core.cache_policy.CachePolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.csp.SiteCSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "wagtail.contrib.redirects.middleware.RedirectMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "wagtail.contrib.settings.context_processors.settings",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# SQLite under var/ by default (the demo); PostgreSQL via DATABASE_URL everywhere else.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'lodestone.sqlite3'}")
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DJANGO_CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the worker write while the web process reads; a busy timeout
    # instead of "database is locked" when both write at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth (django-allauth, email as identity) -----------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_BY_CODE_ENABLED = True
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PRESERVE_USERNAME_CASING = False
ACCOUNT_RATE_LIMITS = {
    "login_failed": "10/m/ip,5/5m/key",
    "confirm_email": "1/3m/key",
    "signup": "20/m/ip",
}
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "account_overview"
WAGTAILADMIN_LOGIN_URL = "/accounts/login/"

# --- Internationalisation -------------------------------------------------------
LANGUAGE_CODE = env.str("LODESTONE_LANGUAGE_CODE", default="en")
LANGUAGES = [
    ("en", "English"),
    ("fa", "فارسی"),
    ("ar", "العربية"),
    ("fi", "Suomi"),
    ("vi", "Tiếng Việt"),
]
LOCALE_PATHS = [BASE_DIR / "site" / "locale"]
TIME_ZONE = env.str("LODESTONE_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
WAGTAIL_I18N_ENABLED = False
WAGTAIL_CONTENT_LANGUAGES = LANGUAGES

# --- Static and media -------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "site" / "static"]
# Public media (page images, share images): served as ordinary files.
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env.str("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Protected media (course assets, lead magnets): never under a public URL.
PROTECTED_MEDIA_ROOT = Path(env.str("LODESTONE_PROTECTED_ROOT", default=str(VAR_DIR / "protected")))
# Signed download links issued by media.delivery expire after this many seconds.
PROTECTED_URL_MAX_AGE = env.int("LODESTONE_PROTECTED_URL_MAX_AGE", default=300)
# "django" streams the file from Python (the demo); "nginx" hands it to nginx with
# X-Accel-Redirect under PROTECTED_ACCEL_PREFIX (an `internal` location).
# Stamped downloads: how often one buyer may download one file, and whether a file that
# cannot be stamped (corrupt, encrypted) may go out unstamped.
DOWNLOAD_LIMIT_COUNT = env.int("LODESTONE_DOWNLOAD_LIMIT_COUNT", default=5)  # 0: no limit
DOWNLOAD_LIMIT_WINDOW_DAYS = env.int("LODESTONE_DOWNLOAD_LIMIT_WINDOW_DAYS", default=30)
DOWNLOAD_ALLOW_UNSTAMPED = env.bool("LODESTONE_DOWNLOAD_ALLOW_UNSTAMPED", default=False)
# How long a web process trusts what it knows of a protected file before asking the store
# again (one S3 HEAD): a file replaced under the same name reaches buyers within this time.
DOWNLOAD_SOURCE_RECHECK_SECONDS = env.int("LODESTONE_DOWNLOAD_SOURCE_RECHECK_SECONDS", default=10)
PROTECTED_SERVE_METHOD = env.str("LODESTONE_PROTECTED_SERVE", default="django")
PROTECTED_ACCEL_PREFIX = "/_protected/"
# Behind our nginx (infra/nginx/lodestone.conf): stamped downloads are sent by nginx from a
# local cache under VAR_DIR/downloads/ (media/accel.py) instead of streamed by Django.
DOWNLOAD_X_ACCEL = env.bool("LODESTONE_X_ACCEL", default=False)

AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    _s3 = {
        "bucket_name": AWS_STORAGE_BUCKET_NAME,
        "access_key": env.str("AWS_ACCESS_KEY_ID"),
        "secret_key": env.str("AWS_SECRET_ACCESS_KEY"),
        "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
        "region_name": env.str("AWS_S3_REGION_NAME", default="us-east-1"),
        "signature_version": "s3v4",
        "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="path"),
        "file_overwrite": False,
    }
    PROTECTED_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            **_s3,
            "location": "protected",
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": PROTECTED_URL_MAX_AGE,
        },
    }
    PUBLIC_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            **_s3,
            "bucket_name": env.str("AWS_PUBLIC_BUCKET_NAME", default=AWS_STORAGE_BUCKET_NAME),
            "location": "public",
            "querystring_auth": env.bool("AWS_PUBLIC_QUERYSTRING_AUTH", default=True),
            "custom_domain": env.str("AWS_PUBLIC_CUSTOM_DOMAIN", default=None),
        },
    }
else:
    PROTECTED_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        # base_url=None: the storage has no public URL; media.delivery signs links.
        "OPTIONS": {"location": str(PROTECTED_MEDIA_ROOT), "base_url": None},
    }
    PUBLIC_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}

STORAGES = {
    "default": PUBLIC_STORAGE,
    "protected": PROTECTED_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Email ------------------------------------------------------------------------
# EMAIL_URL: smtp://user:pass@host:587 (smtp+tls://, smtps://). Default: files under var/mail.
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
# Seconds a worker's claim on an outbox email lasts before another may send it (core.services).
EMAIL_SEND_LEASE = env.int("LODESTONE_EMAIL_SEND_LEASE", default=300)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Lodestone <hello@localhost>")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
ACCOUNT_EMAIL_SUBJECT_PREFIX = ""

# --- Celery -----------------------------------------------------------------------
# REDIS_URL switches on Redis as broker; without it the broker is a folder under var/
# (kombu's filesystem transport), so the demo runs a real worker and beat with no server.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_QUEUE_DIR = VAR_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # visibility_timeout outlasts the longest task: see VIDEO_TRANSCODE_TIME_LIMIT below.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR / "queue"),
        "data_folder_out": str(CELERY_QUEUE_DIR / "queue"),
        "processed_folder": str(CELERY_QUEUE_DIR / "processed"),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="lodestone")
# Media work (transcodes and watermarks that run for hours, PDF preparation) has a queue of
# its own and its own worker (infra/Procfile: media-worker), so it never holds confirmation
# and drip mail up behind it. A worker started without -Q takes the default queue only.
CELERY_MEDIA_QUEUE = env.str("CELERY_MEDIA_QUEUE", default="lodestone-media")
CELERY_TASK_ROUTES = {
    # A beat sweep that only re-queues: on the media queue it would wait behind the very
    # transcode it looks after, one more copy each beat while the media worker is busy or
    # down. On the default queue it runs on time and sends its videos to the media queue.
    "media.tasks.video_requeue_stale": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    "media.tasks.*": {"queue": CELERY_MEDIA_QUEUE},
    "media.stamping.tasks.*": {"queue": CELERY_MEDIA_QUEUE},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
# A task is acknowledged after it ran, so a worker killed mid-task leaves it for another.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Cache ------------------------------------------------------------------------
CACHES = {
    "default": (
        {
            # Fails open: a Redis outage drops cached values, never a sign-up (core/cache.py).
            "BACKEND": "core.cache.FailOpenRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    )
}

# --- Stripe and Mailchimp (switched on by their keys) ------------------------------
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Only for tests and self-hosted stand-ins; empty means Stripe's own API.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
# Seconds a Stripe call may take (a buyer is waiting); network retries per call.
STRIPE_TIMEOUT = env.float("STRIPE_TIMEOUT", default=20)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
MAILCHIMP_API_KEY = env.str("MAILCHIMP_API_KEY", default="")
MAILCHIMP_SERVER_PREFIX = env.str(
    "MAILCHIMP_SERVER_PREFIX",
    default=MAILCHIMP_API_KEY.rsplit("-", 1)[-1] if "-" in MAILCHIMP_API_KEY else "",
)
MAILCHIMP_AUDIENCE_ID = env.str("MAILCHIMP_AUDIENCE_ID", default="")
MAILCHIMP_API_HOST = env.str("MAILCHIMP_API_HOST", default="")
# Seconds the client waits for Mailchimp; a slower answer is a retryable failure.
MAILCHIMP_TIMEOUT = env.float("MAILCHIMP_TIMEOUT", default=15)


# --- Funnels -----------------------------------------------------------------------------
def _limits(value: str) -> tuple[tuple[int, int], ...]:
    # "10/60,60/3600": at most 10 hits a minute and 60 an hour.
    return tuple(tuple(int(n) for n in part.split("/")) for part in value.split(",") if part)


FUNNELS_OPTIN_IP_LIMITS = _limits(env.str("LODESTONE_OPTIN_IP_LIMITS", default="10/60,60/3600"))
FUNNELS_OPTIN_EMAIL_LIMIT = _limits(env.str("LODESTONE_OPTIN_EMAIL_LIMIT", default="5/3600"))[0]
# How long a web process trusts what it knows of a landing page's opt-in forms before one
# indexed SELECT asks whether the page is still live at that revision: a publish or
# unpublish reaches the opt-in endpoint within this time.
FUNNELS_FORM_SPEC_TRUST_SECONDS = env.int("LODESTONE_FORM_SPEC_TRUST_SECONDS", default=3)

# --- Drip sequences ----------------------------------------------------------------------
DRIP_RATE_PER_MINUTE = env.int("LODESTONE_DRIP_RATE_PER_MINUTE", default=3000)
DRIP_DOMAIN_RATE_PER_MINUTE = env.int("LODESTONE_DRIP_DOMAIN_RATE_PER_MINUTE", default=600)
DRIP_WARMUP_PER_HOUR = env.int("LODESTONE_DRIP_WARMUP_PER_HOUR", default=500)  # 0 = off
DRIP_WARMUP_FACTOR = env.float("LODESTONE_DRIP_WARMUP_FACTOR", default=2.0)
DRIP_UNSUBSCRIBE_MAILTO = env.str("LODESTONE_UNSUBSCRIBE_MAILTO", default="")
# Postmark webhooks at /f/esp/postmark/tracking/ and /f/esp/postmark/inbound/ (basic auth).
ANYMAIL = {"WEBHOOK_SECRET": env.str("ANYMAIL_WEBHOOK_SECRET", default="")}
# POSTMARK_SERVER_TOKEN sends all email through Postmark's API (django-anymail) instead of
# EMAIL_URL. Marketing email (broadcasts and sequence steps) then goes out on Postmark's
# broadcast message stream, transactional email on the server's default stream.
if env.str("POSTMARK_SERVER_TOKEN", default=""):
    EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    ANYMAIL["POSTMARK_SERVER_TOKEN"] = env.str("POSTMARK_SERVER_TOKEN")
POSTMARK_BROADCAST_STREAM = env.str("LODESTONE_POSTMARK_BROADCAST_STREAM", default="broadcast")
# Video (HLS): signed segment URLs expire this long after a viewer would reach them.
PROTECTED_VIDEO_URL_TTL = env.int("LODESTONE_PROTECTED_VIDEO_URL_TTL", default=120)
VIDEO_TRANSCODE_TIME_LIMIT = env.int("LODESTONE_VIDEO_TRANSCODE_TIME_LIMIT", default=4 * 3600)
# HLS segment length of new transcodes; a forensic watermark needs 36 segments (media/watermark).
VIDEO_SEGMENT_SECONDS = env.int("LODESTONE_VIDEO_SEGMENT_SECONDS", default=6)
if REDIS_URL:
    # Redis gives a task that is not acknowledged (acks_late) within visibility_timeout to
    # another worker, which would start a second transcode of a long video mid-run.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = (
        max(CELERY_TASK_TIME_LIMIT, VIDEO_TRANSCODE_TIME_LIMIT + 300) + 3600
    )
# The admin would load avatars from gravatar.com: no outbound requests from our pages.
WAGTAIL_GRAVATAR_PROVIDER_URL = None

# --- Wagtail ------------------------------------------------------------------------
WAGTAIL_SITE_NAME = env.str("LODESTONE_SITE_NAME", default="Lodestone")
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
WAGTAILDOCS_SERVE_METHOD = "serve_view"
WAGTAILIMAGES_EXTENSIONS = ["gif", "jpg", "jpeg", "png", "webp", "avif"]
WAGTAIL_PASSWORD_RESET_ENABLED = False
WAGTAILADMIN_COMMENTS_ENABLED = False
WAGTAIL_ENABLE_UPDATE_CHECK = False

# --- Security defaults that hold in every environment -------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "SAMEORIGIN"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"

# Content-Security-Policy (django-csp, core/csp.py): the admin gets its own, wider policy.
# Presigned S3 URLs (video segments, posters, downloads) and a CDN for public images
# are allowed by origin, derived from the storage settings above.
_csp_storage_origins = _csp.s3_origins(
    bucket=AWS_STORAGE_BUCKET_NAME,
    endpoint_url=env.str("AWS_S3_ENDPOINT_URL", default=None),
    region=env.str("AWS_S3_REGION_NAME", default="us-east-1"),
    custom_domain=env.str("AWS_PUBLIC_CUSTOM_DOMAIN", default=None),
)
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": _csp.site_policy(
        storage_origins=_csp_storage_origins,
        stripe_api_base=env.str("STRIPE_API_BASE", default=""),
        frame_origins=env.list("LODESTONE_CSP_FRAME_ORIGINS", default=_csp.DEFAULT_FRAME_ORIGINS),
    )
}
LODESTONE_ADMIN_CSP = _csp.admin_policy(CONTENT_SECURITY_POLICY["DIRECTIVES"])
LODESTONE_ADMIN_PATH_PREFIX = "/admin/"

# --- Edge caching of public pages (core/cache_policy.py, infra/nginx/lodestone.conf) -------
# Anonymous visitors get these page types with `public, max-age, s-maxage`; everything
# else is `private, no-store` unless its view says otherwise. Browsers revalidate
# (max-age 0): a purge reaches nginx or the CDN, not a browser's own copy.
EDGE_CACHE_PAGE_MODELS = env.list(
    "LODESTONE_EDGE_CACHE_PAGE_MODELS",
    default=[
        "core.HomePage",
        "funnels.LandingPage",
        "courses.CourseCatalogPage",
        "courses.CoursePage",
        "webinars.WebinarPage",
    ],
)
EDGE_CACHE_MAX_AGE = env.int("LODESTONE_EDGE_CACHE_MAX_AGE", default=0)
EDGE_CACHE_S_MAXAGE = env.int("LODESTONE_EDGE_CACHE_S_MAXAGE", default=600)
# Purge on publish: Wagtail's frontend cache sends PURGE to nginx's cache-purge location
# (one per language variant). Off unless LODESTONE_FRONTEND_CACHE_PURGE_URL is set,
# e.g. http://127.0.0.1:8081 (the purge listener in infra/nginx/lodestone.conf).
FRONTEND_CACHE_PURGE_URL = env.str("LODESTONE_FRONTEND_CACHE_PURGE_URL", default="")
INSTALLED_APPS.append("wagtail.contrib.frontend_cache")  # purges only with a backend below
if FRONTEND_CACHE_PURGE_URL:
    WAGTAILFRONTENDCACHE = {
        "nginx": {
            "BACKEND": "core.frontend_cache.NginxPurgeBackend",
            "LOCATION": FRONTEND_CACHE_PURGE_URL,
        }
    }
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django_tasks": {"level": "WARNING"},
    },
}

CELERY_BEAT_SCHEDULE = {
    "drip-schedule": {"task": "funnels.tasks_sequences.drip_schedule", "schedule": 60.0},
    "webinar-reminders": {"task": "webinars.tasks.webinar_reminders_send", "schedule": 60.0},
    # Catches webhooks Stripe never delivered (or we never stored): last 3 days, hourly.
    "stripe-reconcile-recent": {
        "task": "payments.tasks.stripe_reconcile_recent",
        "schedule": 3600.0,
    },
    # Outbox sweeps: work committed while the broker was down (or its message lost) is
    # queued again from the stored rows (core.celery_task.OutboxTask).
    "requeue-stale-emails": {"task": "core.tasks.requeue_stale_emails", "schedule": 120.0},
    "signups-requeue-stale": {
        "task": "funnels.tasks_signups.signup_requeue_stale",
        "schedule": 60.0,
    },
    "audience-requeue-stale": {"task": "funnels.tasks.audience_requeue_stale", "schedule": 120.0},
    "offer-requeue-stale": {"task": "payments.tasks.offer_requeue_stale", "schedule": 120.0},
    "video-requeue-stale": {"task": "media.tasks.video_requeue_stale", "schedule": 300.0},
}

# Wagtail's live preview shows the page in a same-origin iframe, so frames stay
# SAMEORIGIN rather than DENY; no other origin may frame the site.
SILENCED_SYSTEM_CHECKS = ["security.W019"]

"""Settings of the django-post-office peer, all from the environment.

DATABASE_URL (postgresql://user@host:port/name), REDIS_URL (Celery's broker), SMTP_URL
(smtp://host:port, where Django's SMTP backend delivers), DJANGO_CONN_MAX_AGE (0: a
connection per request, as Django's docs ask under ASGI), POST_OFFICE_LOCK_FILE (the path,
without ".lock", of post_office's delivery lock).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

_database = urlsplit(os.environ["DATABASE_URL"])
_smtp = urlsplit(os.environ["SMTP_URL"])

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "post-office-peer-benchmark-only")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["post_office"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.post_office_site.urls"
WSGI_APPLICATION = "bench.post_office_site.wsgi.application"
# post_office renders its EmailTemplates with this engine (its TEMPLATE_ENGINE, "django").
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username or "postgres",
        "PASSWORD": _database.password or "",
        "HOST": _database.hostname or "127.0.0.1",
        "PORT": str(_database.port or 5432),
        "CONN_MAX_AGE": int(os.environ.get("DJANGO_CONN_MAX_AGE", "0")),
    }
}
USE_TZ = True
TIME_ZONE = "UTC"

# post_office's installation: its backend queues what Django's send_mail sends; it
# delivers itself through Django's SMTP backend (its fallback for this setting).
EMAIL_BACKEND = "post_office.EmailBackend"
EMAIL_HOST = _smtp.hostname or "127.0.0.1"
EMAIL_PORT = _smtp.port or 25
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = "Securesend peer <no-reply@peer.example>"

# post_office's Celery integration: each queued email's `email_queued` signal starts
# `post_office.tasks.send_queued_mail` after the commit. The default priority (medium)
# queues; "now" would deliver in the request.
POST_OFFICE = {
    "CELERY_ENABLED": True,
    "LOCK_FILE_NAME": os.environ.get("POST_OFFICE_LOCK_FILE", "post_office"),
}

CELERY_BROKER_URL = os.environ["REDIS_URL"]

# The EmailTemplate the view sends (created by bench/post_office_site/prepare.py).
NOTIFICATION_TEMPLATE = "notification"

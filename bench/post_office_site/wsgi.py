"""The peer's WSGI application (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.post_office_site.settings")

application = get_wsgi_application()

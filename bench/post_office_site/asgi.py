"""The peer's ASGI application (uvicorn)."""

import os

from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.post_office_site.settings")

application = get_asgi_application()

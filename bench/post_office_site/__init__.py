"""The django-post-office peer's Django project (bench/post_office.py runs it).

The Celery app is imported here, as Celery's Django guide does it, so that the web process's
`shared_task`s (post_office's `send_queued_mail`) publish through it, to the peer's broker.
"""

from bench.post_office_site.celery_app import app as celery_app

__all__ = ["celery_app"]

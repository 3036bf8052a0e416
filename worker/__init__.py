"""securesend's domain and its Celery workers."""

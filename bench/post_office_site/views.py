"""The peer's view: one templated email queued per request."""

from __future__ import annotations

import json
import uuid

from django.conf import settings  # type: ignore[import-untyped]
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped]
from post_office import mail  # type: ignore[import-untyped]


def send(request: HttpRequest) -> JsonResponse:
    """POST {"to": address}: the notification template rendered for `to` and queued with
    `post_office.mail.send`; a Celery task delivers it."""
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    to = str(json.loads(request.body)["to"])
    email = mail.send(
        recipients=[to],
        sender=settings.DEFAULT_FROM_EMAIL,
        template=settings.NOTIFICATION_TEMPLATE,
        context={
            "name": to.partition("@")[0],
            "sender_name": "Securesend peer",
            "link": f"https://peer.example/messages/{uuid.uuid4().hex}",
        },
    )
    return JsonResponse({"id": email.id, "status": "queued"})


def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})

"""Migrate the peer's database and create its EmailTemplate:

DATABASE_URL=... REDIS_URL=... SMTP_URL=... python -m bench.post_office_site.prepare
"""

from __future__ import annotations

import os

import django  # type: ignore[import-untyped]

SUBJECT = "{{ sender_name }} sent you a secure message"
TEXT = "Hello {{ name }},\n\n{{ sender_name }} sent you a secure message.\nRead it at {{ link }}\n"
HTML = (
    "<p>Hello {{ name }},</p><p>{{ sender_name }} sent you a secure message.</p>"
    '<p><a href="{{ link }}">Read it</a></p>'
)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.post_office_site.settings")
    django.setup()
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.management import call_command  # type: ignore[import-untyped]
    from post_office.models import EmailTemplate  # type: ignore[import-untyped]

    call_command("migrate", interactive=False, verbosity=0)
    EmailTemplate.objects.update_or_create(
        name=settings.NOTIFICATION_TEMPLATE,
        defaults={"subject": SUBJECT, "content": TEXT, "html_content": HTML},
    )


if __name__ == "__main__":
    main()

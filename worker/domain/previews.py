"""Sample data for every email template, and `securesend preview`, which renders them all
to files so a person can look at them in a browser."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from worker.domain.rendering import Renderer, template_locales, template_names
from worker.settings import Settings

_SENDER = {"display_name": "Zoë Ümlaut <Sender>", "email": "zoe@example.com"}

SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "notification": {
        "sender": _SENDER,
        "message": {
            "subject": "Q3 <b>figures</b> & Grüße\r\nBcc: evil@example.com",
            "confidential": False,
            "url": "https://securesend.example/messages/0123456789abcdef0123456789abcdef",
            "expiry_date": "2026-12-31 17:00 UTC",
            "fyeo": True,
        },
        "attachments": {
            "count": 2,
            "total_size": "2.4 MB",
            "files": [
                {"name": "Q3 <figures>.xlsx", "size": "2.1 MB"},
                {"name": "Grüße.pdf", "size": "312.0 KB"},
            ],
        },
    },
    "invitation": {
        "sender": _SENDER,
        "registration_url": "https://securesend.example/register?token=sample-token",
        "cra_required": True,
    },
}


def render_previews(settings: Settings, out: Path, *, group: str | None = None) -> list[Path]:
    """Write `<name>[.<locale>].{subject.txt,txt,html}` for every template and locale, and
    an `index.html` linking them. Raises KeyError for a template without sample data."""
    renderer = Renderer(settings)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    links: list[str] = []
    for name in template_names(settings):
        for locale in ["", *template_locales(settings)]:
            email = renderer.render(name, SAMPLE_CONTEXTS[name], locale=locale or "en", group=group)
            stem = f"{name}.{locale}" if locale else name
            for suffix, content in (
                ("subject.txt", email.subject),
                ("txt", email.text),
                ("html", email.html),
            ):
                path = out / f"{stem}.{suffix}"
                path.write_text(content, encoding="utf-8")
                written.append(path)
            links.append(
                f'<li><a href="{stem}.html">{html.escape(stem)}</a> '
                f'(<a href="{stem}.txt">text</a>): {html.escape(email.subject)}</li>'
            )
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><meta charset='utf-8'><title>securesend email previews</title>"
        f"<h1>Email previews</h1><ul>{''.join(links)}</ul>",
        encoding="utf-8",
    )
    return [*written, index]

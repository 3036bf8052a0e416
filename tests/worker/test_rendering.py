"""Email templates: every trio renders, Html escapes, overrides and locales are found."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError

from worker.domain.previews import SAMPLE_CONTEXTS, render_previews
from worker.domain.rendering import Renderer
from worker.settings import BUILTIN_TEMPLATES_DIR, Settings

CONTEXTS = SAMPLE_CONTEXTS
SENDER = SAMPLE_CONTEXTS["invitation"]["sender"]


def _names() -> list[str]:
    return sorted({p.name.split(".")[0] for p in BUILTIN_TEMPLATES_DIR.glob("*.subject.txt")})


def test_every_builtin_template_is_known_to_this_test() -> None:
    assert _names() == sorted(CONTEXTS)


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_template_renders_all_three_parts(name: str) -> None:
    email = Renderer(Settings()).render(name, CONTEXTS[name])
    assert email.subject and "\n" not in email.subject and "\r" not in email.subject
    assert "Zoë Ümlaut <Sender>" in email.text  # text is not escaped
    assert "Zoë Ümlaut &lt;Sender&gt;" in email.html and "<Sender>" not in email.html
    assert "<style" not in email.html and 'style="' in email.html


def test_confidential_subject_is_replaced() -> None:
    context = {**CONTEXTS["notification"]}
    context["message"] = {**context["message"], "confidential": True}
    email = Renderer(Settings()).render("notification", context)
    assert "plan" not in email.subject and "plan" not in email.text and "plan" not in email.html


def test_the_notification_names_the_files_and_a_confidential_one_only_counts_them() -> None:
    email = Renderer(Settings()).render("notification", CONTEXTS["notification"])
    assert "  - Q3 <figures>.xlsx (2.1 MB)" in email.text
    assert "Q3 &lt;figures&gt;.xlsx (2.1 MB)</li>" in email.html
    counted = {**CONTEXTS["notification"]}
    counted["attachments"] = {**counted["attachments"], "files": []}
    email = Renderer(Settings()).render("notification", counted)
    assert "2 attached files (2.4 MB)." in email.text and ".xlsx" not in email.text
    assert "2 attached files (2.4 MB)." in email.html


def test_missing_variable_is_an_error() -> None:
    with pytest.raises(UndefinedError):
        Renderer(Settings()).render("invitation", {"sender": SENDER})


def test_operator_overrides_by_directory_group_and_locale(tmp_path: Path) -> None:
    (tmp_path / "groups" / "vip").mkdir(parents=True)
    (tmp_path / "fr").mkdir()
    (tmp_path / "invitation.subject.txt").write_text("Operator: {{ sender.display_name }}")
    (tmp_path / "groups" / "vip" / "invitation.subject.txt").write_text("VIP invitation")
    (tmp_path / "fr" / "invitation.subject.txt").write_text("Invitation de {{ sender.email }}")
    renderer = Renderer(Settings(templates_dir=tmp_path))
    context = CONTEXTS["invitation"]

    assert renderer.render("invitation", context).subject == "Operator: Zoë Ümlaut <Sender>"
    assert renderer.render("invitation", context, group="vip").subject == "VIP invitation"
    assert renderer.render("invitation", context, locale="fr").subject == (
        "Invitation de zoe@example.com"
    )
    assert renderer.render("invitation", context, locale="fr-CA").subject.startswith(
        "Invitation de"
    )
    # A locale without its own file falls back; files not overridden come from the built-ins.
    assert renderer.render("invitation", context, locale="de").subject.startswith("Operator")
    assert "Register" in renderer.render("invitation", context, group="vip").html


def test_preview_writes_every_template_and_locale(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides"
    (overrides / "fr").mkdir(parents=True)
    (overrides / "fr" / "notification.subject.txt").write_text("Message de {{ sender.email }}")
    out = tmp_path / "preview"

    written = render_previews(Settings(templates_dir=overrides), out)

    names = sorted(p.name for p in written)
    for stem in ("notification", "notification.fr", "invitation", "invitation.fr"):
        for suffix in ("subject.txt", "txt", "html"):
            assert f"{stem}.{suffix}" in names
    assert (out / "notification.fr.subject.txt").read_text() == "Message de zoe@example.com"
    index = (out / "index.html").read_text()
    assert 'href="notification.html"' in index and 'href="invitation.fr.html"' in index

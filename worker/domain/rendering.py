"""Email rendering with Jinja2: a subject/text/html trio per email (SPEC 3.3).

Search order for `<name>.<part>`: `TEMPLATES_DIR/groups/<group>/`, `TEMPLATES_DIR/`, the
built-in `templates/`; in each, `<locale>/<file>` before `<file>`. Html is autoescaped and
its CSS inlined; text is not escaped. Undefined variables are errors in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape

from worker.settings import BUILTIN_TEMPLATES_DIR, Settings

DEFAULT_LOCALE = "en"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _search_path(templates_dir: Path | None, group_name: str | None) -> list[str]:
    path: list[str] = []
    if templates_dir is not None:
        if group_name:
            path.append(str(templates_dir / "groups" / group_name))
        path.append(str(templates_dir))
    path.append(str(BUILTIN_TEMPLATES_DIR))
    return path


@dataclass(frozen=True, slots=True)
class _Environments:
    html: Environment
    text: Environment


@lru_cache(maxsize=64)
def _environments(search_path: tuple[str, ...]) -> _Environments:
    loader = FileSystemLoader(list(search_path))
    # Templates are part of a deployment: a worker reads each once (restart it to pick up
    # a change) instead of checking the file on every render.
    html = Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        undefined=StrictUndefined,
        auto_reload=False,
    )
    text = Environment(
        loader=loader,
        auto_reload=False,
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return _Environments(html=html, text=text)


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def _candidates(name: str, part: str, locale: str) -> list[str]:
    file_name = f"{name}.{part}"
    locales = [locale] if locale else []
    if "-" in locale:
        locales.append(locale.split("-", 1)[0])
    return [f"{loc}/{file_name}" for loc in locales] + [file_name]


@lru_cache(maxsize=1024)
def _template(search_path: tuple[str, ...], name: str, part: str, locale: str) -> Template:
    """The first of the locale's candidates that exists, looked up once per process (a
    miss is a file-system search of every folder on the path)."""
    envs = _environments(search_path)
    env = envs.html if part == "html" else envs.text
    return env.select_template(_candidates(name, part, locale))


class Renderer:
    """Renders the email templates for the configured `TEMPLATES_DIR`."""

    def __init__(self, settings: Settings) -> None:
        self._templates_dir = settings.templates_dir

    def render(
        self,
        name: str,
        context: dict[str, Any],
        *,
        locale: str = DEFAULT_LOCALE,
        group: str | None = None,
    ) -> RenderedEmail:
        """Render `<name>.subject.txt`, `<name>.txt` and `<name>.html`.

        Raises jinja2's TemplateNotFound or UndefinedError for a missing file or variable.
        """
        search_path = tuple(_search_path(self._templates_dir, group))
        subject = _template(search_path, name, "subject.txt", locale)
        text = _template(search_path, name, "txt", locale)
        html = _template(search_path, name, "html", locale)
        return RenderedEmail(
            subject=" ".join(subject.render(context).split()),
            text=text.render(context),
            html=_inliner().inline(html.render(context)),
        )


def _template_dirs(settings: Settings) -> list[Path]:
    return [Path(p) for p in _search_path(settings.templates_dir, None)]


def template_names(settings: Settings) -> list[str]:
    """Every email that has a subject template, built-in or the operator's."""
    names = {
        p.name.removesuffix(".subject.txt")
        for folder in _template_dirs(settings)
        for p in folder.glob("*.subject.txt")
    }
    return sorted(names)


def template_locales(settings: Settings) -> list[str]:
    """Every locale that has a folder of its own somewhere on the search path."""
    locales = {
        p.name
        for folder in _template_dirs(settings)
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_dir() and p.name not in ("groups", "macros") and any(p.glob("*.subject.txt"))
    }
    return sorted(locales)

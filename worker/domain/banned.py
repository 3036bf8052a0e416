"""Banned content (SendMessage rule 18, code 17): keywords and regular expressions.

Keywords match as substrings after Unicode case folding. All keywords of a list are
compiled into one regular expression shaped like a trie (common prefixes shared), so a
scan walks the text once and its cost does not grow with the number of keywords. A
matcher is built once per (group, list version) and rebuilt when the lists change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from worker.models import BannedEntry, BannedKind, Group


def _trie_pattern(words: Iterable[str]) -> str:
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:  # type: ignore[type-arg]
        ends_here = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends_here else body

    return build(trie)


@dataclass(frozen=True, slots=True)
class BannedMatcher:
    keywords: re.Pattern[str] | None
    regexes: tuple[re.Pattern[str], ...]

    def first_match(self, text: str) -> str | None:
        """The banned keyword or pattern found in `text`, or None."""
        if self.keywords is not None:
            found = self.keywords.search(text.casefold())
            if found:
                return found.group(0)
        for pattern in self.regexes:
            if pattern.search(text):
                return pattern.pattern
        return None


def build_matcher(keywords: Iterable[str], regexes: Iterable[str]) -> BannedMatcher:
    folded = sorted({k.casefold() for k in keywords if k.strip()})
    keyword_re = re.compile(_trie_pattern(folded)) if folded else None
    return BannedMatcher(
        keywords=keyword_re, regexes=tuple(re.compile(r) for r in dict.fromkeys(regexes))
    )


_built: dict[int, tuple[int, BannedMatcher]] = {}


def matcher_for_group(session: Session, group: Group) -> BannedMatcher:
    """The group's matcher (its list plus the global list), rebuilt only when
    `group.banned_version` has changed since this process last built it."""
    cached = _built.get(group.id)
    if cached is not None and cached[0] == group.banned_version:
        return cached[1]
    rows = session.execute(
        select(BannedEntry.kind, BannedEntry.pattern).where(
            or_(BannedEntry.group_id.is_(None), BannedEntry.group_id == group.id)
        )
    ).all()
    matcher = build_matcher(
        (p for kind, p in rows if kind is BannedKind.KEYWORD),
        (p for kind, p in rows if kind is BannedKind.REGEX),
    )
    _built[group.id] = (group.banned_version, matcher)
    return matcher

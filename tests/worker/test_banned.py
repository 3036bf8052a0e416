"""The banned-content matcher: one compiled pattern per list version, rebuilt on change."""

from __future__ import annotations

import ahocorasick_rs
from sqlalchemy import select

from tests.support import Stack
from worker.domain.banned import BannedMatcher, build_matcher, matcher_for_group
from worker.models import Group


def test_ten_thousand_keywords_go_into_one_automaton_that_finds_each() -> None:
    keywords = [f"kw{i:05d}x" for i in range(10_000)] + ["Wire Transfer", "wire"]
    matcher = build_matcher(keywords, [])
    assert isinstance(matcher.keywords, ahocorasick_rs.AhoCorasick)
    for probe in ("kw00000x", "kw04999x", "kw09999x"):
        assert matcher.first_match(f"some text {probe.upper()} more") == probe
    assert matcher.first_match("a WIRE TRANSFER now") == "wire transfer"  # longest at a position
    assert matcher.first_match("kw1000x kw100000") is None
    assert matcher.first_match("") is None


def test_unicode_case_folding_and_regexes() -> None:
    matcher = build_matcher(["Straße", "ǅemal"], [r"\b\d{3}-\d{2}-\d{4}\b", r"(?i)top\s+secret"])
    assert matcher.first_match("GRÜSSE AUS DER STRASSE") == "strasse"
    assert matcher.first_match("\u01c4EMAL") == "\u01c6emal"  # title/upper digraph folded
    assert matcher.first_match("ssn 123-45-6789") == r"\b\d{3}-\d{2}-\d{4}\b"
    assert matcher.first_match("TOP   Secret") == r"(?i)top\s+secret"
    assert matcher.first_match("1234-45-6789 strase") is None


def test_matcher_is_rebuilt_only_when_the_lists_change(sqlite_stack: Stack, unique: str) -> None:
    name = sqlite_stack.make_group(unique, banned={"keywords": ["alpha"], "regexes": []})

    def matcher() -> BannedMatcher:
        with sqlite_stack.database.read_session() as session:
            group = session.scalars(select(Group).where(Group.name == name)).one()
            return matcher_for_group(session, group)

    first = matcher()
    assert matcher() is first  # same version: not rebuilt
    assert first.first_match("ALPHA") == "alpha"
    sqlite_stack.make_group(unique, banned={"keywords": ["beta"], "regexes": []})
    second = matcher()
    assert second is not first
    assert second.first_match("alpha") is None and second.first_match("beta") == "beta"
    sqlite_stack.load({"banned": {"keywords": [f"global-{unique}"], "regexes": []}})
    assert matcher().first_match(f"x global-{unique} y") == f"global-{unique}"

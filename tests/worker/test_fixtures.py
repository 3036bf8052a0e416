"""`securesend load FILE` (SPEC 5): creates, updates, and is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from tests.support import Stack, run_cli
from worker.models import BannedEntry, Contact, Group, User, UserState


def _fixture(tag: str) -> dict[str, object]:
    return {
        "banned": {"keywords": [f"kw-{tag}"], "regexes": [r"\b\d{3}-\d{2}-\d{4}\b"]},
        "groups": [
            {
                "name": f"pro-{tag}",
                "dailyMessages": 7,
                "features": {"fyeo": True, "recall": True},
                "banned": {"keywords": ["secret sauce"], "regexes": []},
            }
        ],
        "users": [
            {
                "email": f"Alice-{tag}@Example.com",
                "password": "correct horse",
                "firstName": "Alice",
                "lastName": "Example",
                "group": f"pro-{tag}",
                "contacts": [f"bob-{tag}@example.com"],
            },
            {"email": f"carol-{tag}@example.com", "password": "pw", "state": "disabled"},
        ],
    }


def _snapshot(stack: Stack, tag: str) -> dict[str, object]:
    with stack.database.read_session() as session:
        group = session.scalars(select(Group).where(Group.name == f"pro-{tag}")).one()
        default = session.scalars(select(Group).where(Group.name == "default")).one()
        alice = session.scalars(select(User).where(User.email == f"alice-{tag}@example.com")).one()
        carol = session.scalars(select(User).where(User.email == f"carol-{tag}@example.com")).one()
        return {
            "group": (
                group.daily_messages,
                group.daily_invites,
                group.feature_fyeo,
                group.feature_cra,
                group.banned_version,
            ),
            "default_invites": default.daily_invites,
            "alice": (alice.id, alice.password_hash, alice.group_id, alice.state),
            "carol": (carol.state, carol.group_id == default.id),
            "contacts": sorted(
                session.scalars(select(Contact.email).where(Contact.owner_id == alice.id))
            ),
            "banned": session.scalar(select(func.count()).select_from(BannedEntry)),
        }


def test_load_creates_and_is_idempotent(sqlite_stack: Stack, unique: str, tmp_path: Path) -> None:
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps(_fixture(unique)))

    first = run_cli("load", str(path), env=sqlite_stack.env)
    before = _snapshot(sqlite_stack, unique)
    second = run_cli("load", str(path), env=sqlite_stack.env)
    after = _snapshot(sqlite_stack, unique)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert before == after  # nothing changed, not even the password hash
    group = before["group"]
    assert isinstance(group, tuple)
    # Numbers a group leaves out come from the default group.
    assert group[0] == 7 and group[1] == before["default_invites"]
    assert group[2] is True and group[3] is False
    alice = before["alice"]
    assert isinstance(alice, tuple)
    assert str(alice[1]).startswith("$argon2") and alice[3] is UserState.ACTIVE
    assert before["carol"] == (UserState.DISABLED, True)
    assert before["contacts"] == [f"bob-{unique}@example.com"]


def test_load_updates_and_yaml_works(sqlite_stack: Stack, unique: str, tmp_path: Path) -> None:
    fixture = _fixture(unique)
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps(fixture))
    assert run_cli("load", str(path), env=sqlite_stack.env).returncode == 0
    version_before = _snapshot(sqlite_stack, unique)["group"]

    yaml_path = tmp_path / "fixtures.yaml"
    yaml_path.write_text(
        f"""
groups:
  - name: pro-{unique}
    dailyMessages: 9
    banned: {{keywords: ["other sauce"], regexes: []}}
users:
  - email: alice-{unique}@example.com
    password: "new password"
    group: pro-{unique}
    contacts: []
"""
    )
    result = run_cli("load", str(yaml_path), env=sqlite_stack.env)
    after = _snapshot(sqlite_stack, unique)

    assert result.returncode == 0, result.stderr
    group = after["group"]
    assert isinstance(group, tuple) and isinstance(version_before, tuple)
    assert group[0] == 9 and group[4] > version_before[4]  # banned list changed: new version
    assert after["contacts"] == []
    assert sqlite_stack.login(f"alice-{unique}@example.com", "new password")


def test_load_rejects_a_bad_file_clearly(sqlite_stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("users:\n  - email: x@example.com\n    state: sleeping\n")
    missing = run_cli("load", str(tmp_path / "nope.yaml"), env=sqlite_stack.env)
    bad = run_cli("load", str(path), env=sqlite_stack.env)
    assert missing.returncode == bad.returncode == 2
    assert "nope.yaml" in missing.stderr
    assert "state" in bad.stderr and "Traceback" not in bad.stderr

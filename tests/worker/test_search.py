"""SearchMessages (SPEC 4): folders, text, sort, pages, the filter in each client's form,
and the vendor's MessageSummary in its results (`guid`, `date`, `retrieved` …)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, update

from tests.factories import World
from tests.support import Stack
from worker.models import Delivery, Message

SESSION = "x-sm-session-token"


@dataclass
class Mailboxes:
    world: World
    reader_token: str
    reader: str
    alpha: str  # sender → reader, "Alpha report"
    beta: str  # sender → reader, Bcc a user named Hiddenname
    recalled: str
    draft: str

    def search(self, token: str, query: str) -> dict[str, Any]:
        with self.world.stack.client() as client:
            response = client.get(f"/api/v1/messages/search?{query}", headers={SESSION: token})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def guids(self, token: str, query: str) -> list[str]:
        return [m["guid"] for m in self.search(token, query)["results"]]


def _java_filter(types: str, criteria: str) -> str:
    """The query string exactly as the Java SDK's Spring template encodes it."""
    jsv = '{ "types":[' + types + '], "searchCriteria": \'' + criteria + "'}"
    return "filter=" + quote(jsv, safe="':,+") + "&page=1&pageSize=25"


@pytest.fixture
def mailboxes(stack: Stack, unique: str) -> Mailboxes:
    world = World(stack, unique).setup()
    stack.load({"users": [{"email": world.sender, "firstName": "Quentin", "group": world.group}]})
    reader, reader_pw = stack.make_user(unique, name="reader", group=world.group)
    hidden = world.user("hidden", firstName="Hiddenname")
    alpha = world.draft(to=[reader], subject="Alpha report")
    assert world.send(alpha).status_code == 200
    beta = world.draft(to=[reader], bcc=[hidden], subject="beta 100%_done")
    assert world.send(beta).status_code == 200
    recalled = world.sent_message([reader])
    with stack.client() as client:
        client.post(
            f"/api/v1/messages/{recalled}/recall", json={}, headers={SESSION: world.token}
        ).raise_for_status()
    draft = world.draft(to=[reader], subject="gamma draft")
    return Mailboxes(world, stack.login(reader, reader_pw), reader, alpha, beta, recalled, draft)


def test_folders(mailboxes: Mailboxes) -> None:
    m, sender = mailboxes, mailboxes.world.token
    assert m.guids(m.reader_token, _java_filter("Inbox", "")) == [m.beta, m.alpha]
    assert m.guids(sender, "filter={types:[Sent]}") == [m.recalled, m.beta, m.alpha]
    assert m.guids(sender, "filter={types:[Draft]}") == [m.draft]
    assert m.guids(sender, "filter={types:[Trash]}") == []
    assert m.guids(sender, "") == [m.draft, m.recalled, m.beta, m.alpha]  # all of the caller's
    assert m.guids(sender, "filter={types:[Inbox]}") == []
    assert m.guids(m.reader_token, "filter={types:[Sent,Draft]}") == []


def test_a_message_sent_to_oneself_is_listed_once_in_all_folders(mailboxes: Mailboxes) -> None:
    m, sender = mailboxes, mailboxes.world.token
    to_self = m.world.draft(to=[m.world.sender, m.reader], subject="note to self")
    assert m.world.send(to_self).status_code == 200
    assert m.guids(sender, "filter={types:[Inbox]}") == [to_self]
    assert m.guids(sender, "filter={types:[Sent]}") == [to_self, m.recalled, m.beta, m.alpha]
    everything = m.search(sender, "filter={types:[Inbox,Sent,Draft]}&pageSize=2")
    assert [r["guid"] for r in everything["results"]] == [to_self, m.draft]
    assert everything["totalItems"] == 5  # the draft, four sent, none twice
    found = m.search(sender, "filter={types:[Inbox,Sent],searchCriteria:'to self'}")
    assert [r["guid"] for r in found["results"]] == [to_self]
    assert found["totalItems"] == 1
    # Its reader sees it in the Inbox alone.
    assert m.guids(m.reader_token, "")[0] == to_self


def _assert_found_by_text(m: Mailboxes) -> None:
    sender = m.world.token
    reader_name = m.reader.split("@")[0].upper()
    assert m.guids(m.reader_token, _java_filter("Inbox", "alpha")) == [m.alpha]
    assert m.guids(m.reader_token, _java_filter("Inbox", "quentin")) == [m.beta, m.alpha]
    assert m.guids(sender, f"filter={{types:[Sent],searchCriteria:{reader_name}}}") == [
        m.recalled,
        m.beta,
        m.alpha,
    ]
    # % and _ are literal characters, not wildcards
    assert m.guids(sender, "filter=" + quote('{"searchCriteria":"100%_"}')) == [m.beta]
    assert m.guids(sender, "filter=" + quote('{"searchCriteria":"1%0"}')) == []
    # A Bcc recipient is the sender's to search by, nobody else's.
    assert m.guids(sender, "filter={SearchCriteria:hiddenname}") == [m.beta]
    assert m.guids(m.reader_token, "filter={SearchCriteria:hiddenname}") == []


def test_text_matches_subject_and_people_but_not_hidden_bcc(mailboxes: Mailboxes) -> None:
    _assert_found_by_text(mailboxes)


def test_sort_and_pages(mailboxes: Mailboxes) -> None:
    m, sender = mailboxes, mailboxes.world.token
    oldest_first = m.guids(sender, "filter={types:[Sent]}&sort={type:Date,direction:Asc}")
    assert oldest_first == [m.alpha, m.beta, m.recalled]
    pages = [m.search(sender, f"filter={{types:[Sent]}}&page={p}&pageSize=2") for p in (1, 2, 3)]
    assert [p["currentPage"] for p in pages] == [1, 2, 3]
    assert {(p["pageSize"], p["totalPages"], p["totalItems"]) for p in pages} == {(2, 2, 3)}
    assert [[r["guid"] for r in p["results"]] for p in pages] == [
        [m.recalled, m.beta],
        [m.alpha],
        [],
    ]
    with m.world.stack.client() as client:
        too_big = client.get("/api/v1/messages/search?pageSize=101", headers={SESSION: sender})
    assert too_big.status_code == 400


def test_the_filter_in_each_clients_form(mailboxes: Mailboxes) -> None:
    m = mailboxes
    headers = {SESSION: m.reader_token}
    json_query = "filter=" + quote('{"types":["inbox"],"searchCriteria":"ALPHA"}')
    assert m.guids(m.reader_token, json_query) == [m.alpha]
    assert m.guids(m.reader_token, "filter={Types:[Inbox],SearchCriteria:alpha}") == [m.alpha]
    assert m.guids(m.reader_token, 'filter={types:["Inbox"],searchCriteria:"al""pha"}') == []
    with m.world.stack.client() as client:
        in_body = client.post(
            "/json/reply/SearchMessages",
            json={"filter": {"types": ["Inbox"], "searchCriteria": "alpha"}, "page": 1},
            headers=headers,
        )
        predefined_get = client.get(
            "/api/SearchMessages?filter={types:[Inbox]}&pageSize=1", headers=headers
        )
        broken = client.get("/api/v1/messages/search?filter={types:[Inbox", headers=headers)
        unknown_folder = client.get(
            "/api/v1/messages/search?filter={types:[Spam]}", headers=headers
        )
        anonymous = client.get("/api/v1/messages/search")
    assert [r["guid"] for r in in_body.json()["results"]] == [m.alpha]
    assert predefined_get.json()["totalItems"] == 2
    assert broken.status_code == 400
    assert broken.json()["responseStatus"]["errorCode"] == "SerializationException"
    assert unknown_folder.status_code == 400
    assert unknown_folder.json()["responseStatus"]["errors"][0]["fieldName"] == "Filter.Types"
    assert anonymous.status_code == 401


def test_summaries_carry_the_vendors_names_and_what_was_read(mailboxes: Mailboxes) -> None:
    m = mailboxes
    headers = {SESSION: m.reader_token}
    before = {r["guid"]: r for r in m.search(m.reader_token, "")["results"]}
    with m.world.stack.client() as client:
        client.get(f"/api/v1/messages/{m.beta}?retrieveBody=false", headers=headers)
        opened = client.get(f"/api/v1/messages/{m.alpha}", headers=headers).json()
        by_sender = client.get(f"/api/v1/messages/{m.alpha}", headers={SESSION: m.world.token})
    after = {r["guid"]: r for r in m.search(m.reader_token, "")["results"]}

    summary = before[m.alpha]
    assert {"guid", "date", "conversationGuid", "retrieved", "parentGuid", "sender"} <= set(summary)
    assert "messageGuid" not in summary
    assert summary["body"] is None  # search results carry no body
    assert summary["conversationGuid"] == m.alpha  # a new message starts its own
    assert summary["date"] == summary["sentDate"] and summary["date"].endswith("Z")
    assert summary["bcc"] == []  # others' Bcc is never shown to a recipient
    assert (before[m.alpha]["retrieved"], before[m.beta]["retrieved"]) == (False, False)
    assert opened["retrieved"] is True and opened["body"] == "body"  # retrieveBody: true
    assert (after[m.alpha]["retrieved"], after[m.beta]["retrieved"]) == (True, False)
    assert by_sender.json()["retrieved"] is True
    sent = {r["guid"]: r for r in m.search(m.world.token, "filter={types:[Sent,Draft]}")["results"]}
    assert [p["firstName"] for p in sent[m.beta]["bcc"]] == ["Hiddenname"]
    # A draft's date is when it was last saved.
    assert sent[m.draft]["sentDate"] is None
    assert sent[m.draft]["date"] >= sent[m.draft]["createdDate"]


def _message_id(guid: str) -> Any:
    return select(Message.id).where(Message.guid == guid).scalar_subquery()


def test_expiry_and_recall_are_kept_on_the_deliveries(mailboxes: Mailboxes) -> None:
    """The Inbox is read from the deliveries alone: the send copies the expiry, a recall
    marks them."""
    m = mailboxes
    stack = m.world.stack
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    expiring = m.world.draft(to=[m.reader], expiryDate=expiry.isoformat())
    assert m.world.send(expiring).status_code == 200
    with stack.database.read_session() as session:
        copied = {
            guid: (expires_at, recalled)
            for guid, expires_at, recalled in session.execute(
                select(Message.guid, Delivery.expires_at, Delivery.recalled).join(
                    Delivery, Delivery.message_id == Message.id
                )
            )
            if guid in (expiring, m.recalled, m.alpha)
        }
    assert copied[expiring][0] == expiry
    assert copied[m.recalled][1] is True and copied[m.alpha] == (None, False)
    assert m.guids(m.reader_token, "filter={types:[Inbox]}") == [expiring, m.beta, m.alpha]
    with stack.database.write_session() as session:  # time passes: it expires
        session.execute(
            update(Delivery)
            .where(
                Delivery.message_id
                == select(Message.id).where(Message.guid == expiring).scalar_subquery()
            )
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert m.guids(m.reader_token, "filter={types:[Inbox]}") == [m.beta, m.alpha]


def test_messages_sent_before_their_search_text_are_found_the_slow_way(
    mailboxes: Mailboxes,
) -> None:
    with mailboxes.world.stack.database.write_session() as session:
        session.execute(update(Message).values(search_text=None, search_bcc=None))
    _assert_found_by_text(mailboxes)

"""ServiceStack's metadata pages and DTO files, from the operation registry: what a
ServiceStack user opens in a browser or adds as a reference, against a live API."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx

from api_shim.routes import all_operations
from tests.support import Stack

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class _Page(HTMLParser):
    """The links and the table rows (cell texts, unescaped) of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self.pre: list[str] = []
        self._cell: list[str] | None = None
        self._in_pre = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links += [v or "" for k, v in attrs if k == "href"]
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_pre:
            self.pre[-1] += data

    def row(self, first: str) -> list[str]:
        return next(r for r in self.rows if r and r[0] == first)


def _get(stack: Stack, path: str) -> httpx.Response:
    with stack.client() as client:  # no session: none of these needs one
        return client.get(path, headers={"accept": BROWSER_ACCEPT})


def test_index_links_every_operation_and_the_dto_files(sqlite_stack: Stack) -> None:
    response = _get(sqlite_stack, "/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = _Page(response.text)
    for op in all_operations():
        assert f"/json/metadata?op={op.name}" in page.links, op.name
    assert {"/types/typescript", "/types/csharp", "/openapi.json"} <= set(page.links)
    _, routes, summary = page.row("SendMessage")
    assert "PUT /api/v1/messages/{messageGuid}/send" in routes
    assert summary == "Send a draft message"


def test_send_message_page(sqlite_stack: Stack) -> None:
    # A browser asks for HTML: the page must not be refused as a non-JSON format (406).
    response = _get(sqlite_stack, "/json/metadata?op=SendMessage")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = _Page(response.text)

    routes = {" ".join(r) for r in page.rows if len(r) == 2}
    assert {
        "PUT /api/v1/messages/{messageGuid}/send",
        "PUT /api/messages/{messageGuid}/send",
        "GET, POST, PUT, DELETE /json/reply/SendMessage",
        "GET, POST, PUT, DELETE /api/SendMessage",
    } <= routes

    # Name, parameter location, data type, required, description, allowable values.
    assert page.row("messageGuid") == [
        "messageGuid",
        "PATH",
        "Guid",
        "Yes",
        "The draft to send.",
        "",
    ]
    assert page.row("notificationFormats") == [
        "notificationFormats",
        "BODY",
        "List<string>",
        "No",
        "Text and/or Html: the notification bodies answered (none = both).",
        "Text, Html",
    ]
    assert page.row("inviteNewUsers")[1:4] == ["BODY", "bool?", "No"]
    assert page.row("notificationSent")[:3] == ["notificationSent", "bool", "Yes"]

    assert ["404", "929", "Message not found"] in page.rows
    assert [
        "403",
        "28",
        "You have sent all of your allowed daily secure messages. Please contact the "
        "administrator to upgrade your User Group profile.",
    ] in page.rows
    assert ["401", "811", "The user session is no longer valid."] in page.rows
    assert any(r[0] == "202" and "respond-async" in r[1] for r in page.rows)

    request, answer = page.pre
    head, _, body = request.partition("\n\n")
    assert head.startswith("PUT /api/v1/messages/") and head.splitlines()[0].endswith(
        "/send HTTP/1.1"
    )
    assert "x-sm-session-token:" in head and "Content-Type: application/json" in head
    assert '"notificationFormats": [\n    "Text"\n  ]' in body
    assert answer.startswith("HTTP/1.1 200 OK")
    assert '"notificationSent": false' in answer and '"responseStatus": null' in answer


def test_get_operation_samples_a_query_string(sqlite_stack: Stack) -> None:
    page = _Page(_get(sqlite_stack, "/json/metadata?op=searchmessages").text)  # any casing
    assert page.row("filter")[:3] == ["filter", "QUERY", "SearchFilter"]
    assert page.row("types") == [  # the nested type's own table
        "types",
        "List<Folder>",
        "No",
        "Inbox, Sent, Draft, Trash (none = all of the caller's).",
        "Inbox, Sent, Draft, Trash",
    ]
    first_line = page.pre[0].splitlines()[0]
    assert first_line.startswith("GET /api/v1/messages/search?page=0&pageSize=0&filter=%7B")
    assert first_line.endswith(" HTTP/1.1")


def test_unknown_operation_is_a_servicestack_404(sqlite_stack: Stack) -> None:
    response = _get(sqlite_stack, "/json/metadata?op=%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["responseStatus"]["errorCode"] == "NotFound"
    assert "<script>" not in response.text


def test_dto_files_declare_every_operation(sqlite_stack: Stack) -> None:
    typescript = _get(sqlite_stack, "/types/typescript")
    csharp = _get(sqlite_stack, "/types/csharp")
    for response in (typescript, csharp):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert f"BaseUrl: {sqlite_stack.url('')}\n" in response.text
    ts, cs = typescript.text, csharp.text
    for op in all_operations():
        assert f"export class {op.name} implements IReturn" in ts, op.name
        assert f"    public getTypeName() {{ return '{op.name}'; }}" in ts
        assert f"    public partial class {op.name}\n" in cs, op.name
    assert "export class SendMessage implements IReturn<SendMessageResponse>" in ts
    assert "    public getMethod() { return 'PUT'; }" in ts
    assert "    public notificationFormats?: ('Text' | 'Html')[];" in ts
    assert "    public messageGuid!: string;" in ts
    assert "export enum FyeoType\n{\n    Disabled = 'Disabled'," in ts

    assert '[Route("/api/v1/messages/{MessageGuid}/send", "PUT")]' in cs
    assert (
        "    public partial class SendMessage\n        : IReturn<SendMessageResponse>, IPut" in cs
    )
    assert "        public virtual Guid MessageGuid { get; set; }" in cs
    assert "        public virtual List<string> NotificationFormats { get; set; }" in cs
    assert '[ApiAllowableValues("NotificationFormats", Values=new string[]{"Text", "Html"})]' in cs
    assert cs.count("{") == cs.count("}")

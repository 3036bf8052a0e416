"""ServiceStack's HTML metadata pages: /metadata lists the operations, and
/json/metadata?op=<Name> shows one (routes, parameters, answers, errors, a sample call),
all rendered from the description in `model`. Every value that goes into the HTML is
escaped here, where the HTML is written."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from api_shim.metadata.model import (
    CSHARP_TYPES,
    INDEX_PAGE,
    QUERY_VERBS,
    RESPONSE_STATUS,
    TYPESCRIPT_TYPES,
    Api,
    DataType,
    Member,
    OperationDef,
    Route,
    TypeDef,
    csharp_type,
    fill_placeholders,
    sample_object,
)
from api_shim.pipeline import SESSION_HEADER
from api_shim.wire import JSON_TYPE, METADATA_PAGE

esc = html.escape
FIELD_COLUMNS = ("Name", "Data Type", "Required", "Description", "Allowable Values")
PARAMETER_COLUMNS = (
    "Name",
    "Parameter",
    "Data Type",
    "Required",
    "Description",
    "Allowable Values",
)
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}pre{background:#f8f8f8;border:1px solid #ddd;padding:1em;"
    "overflow:auto}code{font-size:95%}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of cells that are already HTML (escape what goes into them)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def operation_link(name: str) -> str:
    return f"{METADATA_PAGE}?op={quote(name, safe='')}"


def _route_text(route: Route) -> str:
    return esc(f"{', '.join(route.verbs)} {route.path}")


def render_index(api: Api) -> str:
    """The /metadata page: every operation, linking to its page, and the DTO files."""
    rows = (
        (
            f'<a href="{esc(operation_link(op.name))}">{esc(op.name)}</a>',
            "<br>".join(_route_text(r) for r in op.routes),
            esc(op.summary),
        )
        for op in api.operations
    )
    links = (
        (TYPESCRIPT_TYPES, "TypeScript DTOs for @servicestack/client"),
        (CSHARP_TYPES, "C# DTOs for ServiceStack.Client"),
        ("/openapi.json", "OpenAPI 3 description"),
    )
    items = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for href, text in links)
    return _page(
        f"{api.title} Metadata",
        f"<h1>{esc(api.title)}</h1>\n<p>{esc(api.description)}</p>\n"
        "<h2>Operations</h2>\n<p>The following operations are supported.</p>\n"
        + _table(("Operation", "Routes", "Summary"), rows)
        + f"<h2>Add ServiceStack Reference</h2>\n<ul>{items}</ul>\n",
    )


def _member_rows(members: Iterable[Member], *, with_location: bool) -> Iterator[list[str]]:
    for m in members:
        row = [f"<code>{esc(m.name)}</code>"]
        if with_location:
            row.append(esc(m.location or ""))
        row += [
            esc(csharp_type(m.type, optional=m.optional)),
            "Yes" if m.required and not m.nullable else "No",
            esc(m.description),
            esc(", ".join(m.type.allowable)),
        ]
        yield row


def _reachable(api: Api, members: Iterable[Member]) -> list[TypeDef]:
    """The models `members` refer to, directly or through other models, once each."""
    found: dict[str, TypeDef] = {}
    pending = list(members)
    while pending:
        data_type: DataType | None = pending.pop(0).type
        while data_type is not None and data_type.kind in ("list", "map"):
            data_type = data_type.item
        if data_type is not None and data_type.kind == "model" and data_type.name not in found:
            found[data_type.name] = api.type_named(data_type.name)
            pending.extend(found[data_type.name].members)
    return list(found.values())


def _type_tables(api: Api, members: Iterable[Member]) -> str:
    """A table for each model `members` refer to, as ServiceStack lists nested types."""
    return "".join(
        f"<h3>{esc(t.name)}</h3>\n"
        + (f"<p>{esc(t.description)}</p>\n" if t.description else "")
        + _table(FIELD_COLUMNS, _member_rows(t.members, with_location=False))
        for t in _reachable(api, members)
    )


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def sample_request(api: Api, op: OperationDef, host: str) -> str:
    """The HTTP request text of a call to the operation's first route, with placeholder
    values: its body in JSON, or for a GET or DELETE its query string."""
    values = sample_object(api, op.request.members)
    by_lower = {name.lower(): value for name, value in values.items()}
    path = fill_placeholders(
        op.routes[0].path, lambda name: str(by_lower.get(name.lower(), "String"))
    )
    rest = {m.name: values[m.name] for m in op.request.members if m.location != "PATH"}
    lines = []
    if op.verb in QUERY_VERBS and rest:
        path += "?" + "&".join(f"{k}={quote(_query_value(v), safe='')}" for k, v in rest.items())
    lines += [f"{op.verb} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    if op.authenticated:
        lines.append(f"{SESSION_HEADER}: <the sessionToken from Login>")
    if op.verb in QUERY_VERBS:
        return "\n".join(lines)
    body = json.dumps(rest, indent=2)
    lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}", ""]
    return "\n".join([*lines, body])


def sample_response(api: Api, op: OperationDef) -> str:
    members = op.response.members if op.response else ()
    values = sample_object(api, members)
    if RESPONSE_STATUS in values:
        values[RESPONSE_STATUS] = None  # filled only on errors
    body = json.dumps(values, indent=2)
    return "\n".join(
        [
            "HTTP/1.1 200 OK",
            f"Content-Type: {JSON_TYPE}",
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
    )


def _authentication_note(op: OperationDef) -> str:
    if not op.authenticated:
        return "<p>No session needed.</p>\n"
    return (
        "<p><b>Requires a session:</b> the <code>sessionToken</code> from Login in the "
        f"<code>{esc(SESSION_HEADER)}</code> header, as <code>Authorization: Bearer</code>, "
        "or the <code>ss-id</code> cookie.</p>\n"
    )


def _routes_section(op: OperationDef) -> str:
    def rows(routes: Iterable[Route]) -> Iterator[tuple[str, str]]:
        return ((esc(", ".join(r.verbs)), f"<code>{esc(r.path)}</code>") for r in routes)

    return (
        "<h2>Routes</h2>\n"
        + _table(("Verb", "Path"), rows(op.routes))
        + "<p>Pre-defined routes (the path parameters go in the body or query string):</p>\n"
        + _table(("Verb", "Path"), rows(op.predefined))
    )


def _parameters_section(api: Api, op: OperationDef) -> str:
    members = op.request.members
    return (
        f"<h2>{esc(op.name)} Parameters</h2>\n"
        + _table(PARAMETER_COLUMNS, _member_rows(members, with_location=True))
        + _type_tables(api, members)
    )


def _response_section(api: Api, op: OperationDef) -> str:
    name = op.response.name if op.response else "an empty object {}"
    answers = [("200", esc(name)), *((str(s), esc(d)) for s, d in op.other_responses)]
    html_text = "<h2>Response</h2>\n" + _table(("HTTP status", "Answer"), answers)
    if op.response is None:
        return html_text
    members = op.response.members
    return (
        html_text
        + f"<h3>{esc(op.response.name)}</h3>\n"
        + _table(FIELD_COLUMNS, _member_rows(members, with_location=False))
        + _type_tables(api, members)
    )


def _errors_section(op: OperationDef) -> str:
    rows = ((str(k.http_status), esc(k.code), esc(k.message)) for k in op.errors)
    return (
        "<h2>Errors</h2>\n<p>Each answers a ServiceStack <code>responseStatus</code>.</p>\n"
        + _table(("HTTP status", "errorCode", "message"), rows)
    )


def _samples_section(api: Api, op: OperationDef, host: str) -> str:
    return (
        "<h2>HTTP + JSON</h2>\n<p>A sample request and response; the placeholders shown "
        "need to be replaced with actual values.</p>\n"
        f"<pre>{esc(sample_request(api, op, host))}</pre>\n"
        f"<pre>{esc(sample_response(api, op))}</pre>\n"
    )


def render_operation(api: Api, op: OperationDef, *, host: str) -> str:
    """The /json/metadata?op=<Name> page: routes, parameters, answers, errors, samples."""
    body = (
        f'<p><a href="{esc(INDEX_PAGE)}">&larr; all operations</a></p>\n'
        f"<h1>{esc(op.name)}</h1>\n<p>{esc(op.summary)}</p>\n"
        + _authentication_note(op)
        + _routes_section(op)
        + _parameters_section(api, op)
        + _response_section(api, op)
        + _errors_section(op)
        + _samples_section(api, op, host)
    )
    return _page(f"{op.name} | {api.title}", body)

"""ServiceStack's metadata pages and "Add ServiceStack Reference" DTOs (issue 14, point 9).

A ServiceStack user finds an API at `/metadata`, reads an operation at
`/json/metadata?op=<Name>` and types it with the DTOs at `/types/typescript` or
`/types/csharp`. All four come from the one operation registry that /openapi.json comes
from: `describe` walks the `Operation` objects and the JSON schemas of their request and
response models once, into a small neutral description (`Api`), and three renderers (HTML,
TypeScript, C#) each render that description. No operation or field is listed twice.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api_shim.pipeline import SESSION_HEADER
from api_shim.registry import PREFIXES, Operation, error_kinds
from api_shim.responses import ResponseStatus
from api_shim.wire import GUID_SCHEMA, JSON_TYPE, METADATA_PAGE, error_response
from worker.domain import clock, errors
from worker.domain.errors import ApiError, ErrorKind

INDEX_PAGE = "/metadata"
TYPESCRIPT_TYPES = "/types/typescript"
CSHARP_TYPES = "/types/csharp"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

# --- the neutral description ---------------------------------------------------------------

Kind = Literal[
    "string",
    "integer",
    "number",
    "boolean",
    "guid",
    "datetime",
    "enum",
    "model",
    "map",
    "list",
    "any",  # a union, or a free-form value
]
Location = Literal["PATH", "QUERY", "BODY"]
Locate = Callable[[str], Location]


@dataclass(frozen=True)
class DataType:
    """A property's type. `name` names a declared enum or model (an enum without a name,
    from a `Literal`, has only `values`); `item` is a list's item or a map's value."""

    kind: Kind
    name: str = ""
    values: tuple[str, ...] = ()
    item: DataType | None = None

    @property
    def element(self) -> DataType:
        """A list's item type (at any depth), or this type."""
        return self.item.element if self.kind == "list" and self.item else self

    @property
    def allowable(self) -> tuple[str, ...]:
        """The values an enum, or a list of one, allows (none for other types)."""
        return self.element.values


@dataclass(frozen=True)
class Member:
    """A property as it is on the wire (camelCase)."""

    name: str
    type: DataType
    required: bool  # a request must give it; a response always has it
    nullable: bool
    description: str = ""
    location: Location | None = None  # request DTOs only

    @property
    def optional(self) -> bool:
        return self.nullable or not self.required


@dataclass(frozen=True)
class TypeDef:
    name: str
    members: tuple[Member, ...]
    description: str = ""


@dataclass(frozen=True)
class EnumDef:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    verbs: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class OperationDef:
    name: str
    summary: str
    verb: str  # the verb of its own routes: what a typed client sends
    routes: tuple[Route, ...]  # its own routes under every prefix
    typed_routes: tuple[Route, ...]  # the same under the first prefix: for typed clients
    predefined: tuple[Route, ...]  # /json/reply/<Name> and /api/<Name>
    request: TypeDef  # named after the operation, as ServiceStack names request DTOs
    response: TypeDef | None  # None: an empty body (`{}`), IReturnVoid
    errors: tuple[ErrorKind, ...]
    other_responses: tuple[tuple[int, str], ...]  # e.g. 202 for SendMessage
    authenticated: bool


@dataclass(frozen=True)
class Api:
    title: str
    description: str
    operations: tuple[OperationDef, ...]  # by name, as ServiceStack lists them
    types: tuple[TypeDef, ...]  # responses and nested types, by name
    enums: tuple[EnumDef, ...]

    def operation(self, name: str) -> OperationDef | None:
        """The operation called `name`, in any casing (as the pre-defined routes match)."""
        return next((op for op in self.operations if op.name.lower() == name.lower()), None)

    def type_named(self, name: str) -> TypeDef:
        return next(t for t in self.types if t.name == name)


# --- the one walk over the registry -------------------------------------------------------

REF_TEMPLATE = "#/$defs/{model}"
# Verbs whose requests ServiceStack's clients send in the query string, not in a body.
QUERY_VERBS = frozenset({"GET", "DELETE"})
# ServiceStack's convention: a response carries `responseStatus` (null on success), whose
# type clients know; the model declares it as `None`, so its type is supplied here.
RESPONSE_STATUS = "responseStatus"


def _path_params(op: Operation[Any]) -> frozenset[str]:
    return frozenset(
        part.strip("{}").lower()
        for _, path in op.routes
        for part in path.split("/")
        if part.startswith("{")
    )


class _Catalog:
    """Collects the named models and enums met while walking the models' JSON schemas."""

    def __init__(self) -> None:
        self.types: dict[str, TypeDef] = {}
        self.enums: dict[str, EnumDef] = {}

    def request(self, op: Operation[Any]) -> TypeDef:
        in_path = _path_params(op)
        query_or_body: Location = "QUERY" if op.routes[0][0] in QUERY_VERBS else "BODY"

        def locate(name: str) -> Location:
            return "PATH" if name.lower() in in_path else query_or_body

        schema = op.request.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
        return self._type_def(op.name, schema, schema.get("$defs", {}), locate=locate)

    def response(self, model: type[BaseModel]) -> TypeDef:
        """The response model, registered among the types under its class name."""
        self._model(model)
        return self.types[model.__name__]

    def _model(self, model: type[BaseModel]) -> DataType:
        if model.__name__ not in self.types:
            schema = model.model_json_schema(
                by_alias=True, mode="serialization", ref_template=REF_TEMPLATE
            )
            self._define(model.__name__, schema, schema.get("$defs", {}))
        return DataType("model", name=model.__name__)

    def _define(self, name: str, schema: dict[str, Any], defs: dict[str, Any]) -> None:
        # A placeholder first, so that a model that refers to itself ends the walk.
        self.types[name] = TypeDef(name, ())
        self.types[name] = self._type_def(name, schema, defs)

    def _type_def(
        self,
        name: str,
        schema: dict[str, Any],
        defs: dict[str, Any],
        *,
        locate: Locate | None = None,
    ) -> TypeDef:
        required = set(schema.get("required", ()))
        members = tuple(
            self._member(prop, sub, required=prop in required, defs=defs, locate=locate)
            for prop, sub in schema.get("properties", {}).items()
        )
        return TypeDef(name, members, str(schema.get("description", "")))

    def _member(
        self,
        name: str,
        schema: dict[str, Any],
        *,
        required: bool,
        defs: dict[str, Any],
        locate: Locate | None,
    ) -> Member:
        options = schema.get("anyOf", [schema])
        given = [o for o in options if o.get("type") != "null"]
        if not given and name == RESPONSE_STATUS:
            data_type = self._model(ResponseStatus)
        elif len(given) == 1:
            data_type = self._data_type(given[0], defs)
        elif all(o.get("type") == "string" for o in given):
            # One value written several ways (a date: ISO 8601, /Date(ms)/, or "").
            dated = any(o.get("format") == "date-time" for o in given)
            data_type = DataType("datetime" if dated else "string")
        else:
            data_type = DataType("any")
        inner = given[0].get("description", "") if len(given) == 1 else ""
        return Member(
            name=name,
            type=data_type,
            required=required,
            nullable=len(given) < len(options),
            description=str(schema.get("description") or inner),
            location=locate(name) if locate is not None else None,
        )

    def _data_type(self, schema: dict[str, Any], defs: dict[str, Any]) -> DataType:
        if "$ref" in schema:
            return self._named(str(schema["$ref"]).rsplit("/", 1)[-1], defs)
        if "enum" in schema:
            return DataType("enum", values=tuple(str(v) for v in schema["enum"]))
        kind = schema.get("type")
        if kind == "array":
            return DataType("list", item=self._data_type(schema.get("items", {}), defs))
        if kind == "object":
            values = schema.get("additionalProperties")
            item = self._data_type(values, defs) if isinstance(values, dict) else None
            return DataType("map", item=item)
        if kind == "string":
            if schema.get("pattern") == GUID_SCHEMA:
                return DataType("guid")
            return DataType("datetime" if schema.get("format") == "date-time" else "string")
        if kind in ("integer", "number", "boolean"):
            return DataType(kind)
        return DataType("any")

    def _named(self, name: str, defs: dict[str, Any]) -> DataType:
        schema = defs[name]
        if "enum" in schema:
            values = tuple(str(v) for v in schema["enum"])
            self.enums.setdefault(name, EnumDef(name, values))
            return DataType("enum", name=name, values=values)
        if name not in self.types:
            self._define(name, schema, defs)
        return DataType("model", name=name)


def _predefined_routes(app: FastAPI) -> tuple[Route, ...]:
    """The pre-defined routes `register` added (`/json/reply/{operation}`, …), read from
    the app so that the verbs shown are the ones served."""
    order = ("GET", "POST", "PUT", "DELETE", "PATCH")

    def rank(method: str) -> int:
        return order.index(method) if method in order else len(order)

    return tuple(
        Route(tuple(sorted(route.methods or (), key=rank)), route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.endswith("/{operation}")
    )


def describe(
    operations: Sequence[Operation[Any]],
    *,
    title: str,
    description: str = "",
    predefined: Sequence[Route] = (),
) -> Api:
    """The operations, their types and enums, from the registry and its models' schemas.

    Raises ValueError when an operation's name is also the name of a model: both would be
    one class in the DTOs."""
    catalog = _Catalog()
    described = []
    for op in operations:
        verb = op.routes[0][0]
        described.append(
            OperationDef(
                name=op.name,
                summary=op.summary,
                verb=verb,
                routes=tuple(
                    Route((method,), prefix + path)
                    for method, path in op.routes
                    for prefix in PREFIXES
                ),
                typed_routes=tuple(
                    Route((method,), PREFIXES[0] + path) for method, path in op.routes
                ),
                predefined=tuple(
                    Route(r.verbs, r.path.replace("{operation}", op.name)) for r in predefined
                ),
                request=catalog.request(op),
                response=catalog.response(op.response) if op.response else None,
                errors=error_kinds(op),
                other_responses=tuple((s, d) for s, (d, _) in sorted(op.extra_responses.items())),
                authenticated=op.authenticated,
            )
        )
    clashes = {op.name for op in described} & (set(catalog.types) | set(catalog.enums))
    if clashes:
        raise ValueError(f"operations named like a model: {sorted(clashes)}")
    return Api(
        title=title,
        description=description,
        operations=tuple(sorted(described, key=lambda op: op.name)),
        types=tuple(sorted(catalog.types.values(), key=lambda t: t.name)),
        enums=tuple(sorted(catalog.enums.values(), key=lambda e: e.name)),
    )


# --- sample values ---------------------------------------------------------------------------

SAMPLE_GUID = "3f2504e04f8911d39a0c0305e82c3301"  # N form, lower case, as answered
SCALAR_SAMPLES: dict[str, Any] = {
    "string": "String",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "guid": SAMPLE_GUID,
    "datetime": "2025-01-31T12:00:00Z",
}
MAX_SAMPLE_DEPTH = 4  # a model that contains itself is shown this deep


def sample(api: Api, data_type: DataType | None, depth: int = 0) -> Any:
    """A placeholder value of `data_type`, as ServiceStack's metadata pages show them."""
    if data_type is None:
        return {}
    if data_type.kind in SCALAR_SAMPLES:
        return SCALAR_SAMPLES[data_type.kind]
    if data_type.kind == "enum":
        return data_type.values[0] if data_type.values else "String"
    if data_type.kind == "list":
        return [sample(api, data_type.item, depth)]
    if data_type.kind == "map":
        return {"String": sample(api, data_type.item, depth)} if data_type.item else {}
    if data_type.kind == "model" and depth < MAX_SAMPLE_DEPTH:
        return sample_object(api, api.type_named(data_type.name).members, depth + 1)
    return {}


def sample_object(api: Api, members: Iterable[Member], depth: int = 0) -> dict[str, Any]:
    return {m.name: sample(api, m.type, depth) for m in members}


# --- type names shared by the HTML pages and the C# DTOs ----------------------------------

CSHARP_SCALARS = {
    "string": "string",
    "integer": "int",
    "number": "double",
    "boolean": "bool",
    "guid": "Guid",
    "datetime": "DateTime",
}
CSHARP_VALUE_TYPES = frozenset({"integer", "number", "boolean", "guid", "datetime"})


def csharp_type(data_type: DataType | None, *, optional: bool = False) -> str:
    """The C# type, which ServiceStack's metadata pages also show: value types get `?`
    when the property is optional or nullable."""
    if data_type is None:
        return "Object"
    kind = data_type.kind
    if kind == "list":
        return f"List<{csharp_type(data_type.item)}>"
    if kind == "map":
        return f"Dictionary<string, {csharp_type(data_type.item)}>"
    if kind in ("model", "enum") and data_type.name:
        is_value = kind == "enum"
        name = data_type.name
    else:
        is_value = kind in CSHARP_VALUE_TYPES
        name = CSHARP_SCALARS.get(kind, "string" if kind == "enum" else "Object")
    return name + "?" if optional and is_value else name


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _fill(path: str, replace: Callable[[str], str]) -> str:
    """`path` with each `{placeholder}` replaced by `replace(placeholder)`."""
    return re.sub(r"\{([^}]*)\}", lambda m: replace(m.group(1)), path)


def _pascal_placeholders(path: str) -> str:
    """`/messages/{messageGuid}` as ServiceStack declares it: `/messages/{MessageGuid}`."""
    return _fill(path, lambda name: "{" + pascal(name) + "}")


# --- the HTML pages ------------------------------------------------------------------------

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
    path = _fill(op.routes[0].path, lambda name: str(by_lower.get(name.lower(), "String")))
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


# --- the DTO files ---------------------------------------------------------------------------


def _header(base_url: str, note: str) -> str:
    """ServiceStack's header: its tools read `BaseUrl` to fetch the file again."""
    date = clock.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"/* Options:\nDate: {date}\nBaseUrl: {_comment(base_url)}\n\n{note}\n*/\n"


def _comment(text: str) -> str:
    """`text` safe inside a block or line comment: on one line, never closing it."""
    return " ".join(text.split()).replace("*/", "*\\/")


def _identifier(value: str) -> str:
    """An enum value as a member name (the values here are already PascalCase words)."""
    name = re.sub(r"\W", "_", value)
    return f"_{name}" if not name or name[0].isdigit() else name


def _quoted(text: str) -> str:
    """A double-quoted string literal, valid in C# (and in TypeScript)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ts_string(text: str) -> str:
    """A single-quoted TypeScript string literal, as ServiceStack writes them."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def typescript_type(data_type: DataType | None) -> str:
    if data_type is None:
        return "any"
    kind = data_type.kind
    if kind == "list":
        item = typescript_type(data_type.item)
        return f"({item})[]" if "|" in item else f"{item}[]"
    if kind == "map":
        return f"{{ [index: string]: {typescript_type(data_type.item)}; }}"
    if kind in ("model", "enum") and data_type.name:
        return data_type.name
    if kind == "enum":  # no name: a union of its values
        return " | ".join(_ts_string(v) for v in data_type.values) or "string"
    return {"integer": "number", "number": "number", "boolean": "boolean", "any": "any"}.get(
        kind, "string"
    )


def _ts_member(m: Member) -> list[str]:
    lines = [f"    /** @description {_comment(m.description)} */"] if m.description else []
    # A required property is declared definitely assigned (`!`): the constructor fills it
    # from `init`, and the file then compiles with `strict` on.
    mark = "?" if m.optional else "!"
    return [*lines, f"    public {m.name}{mark}: {typescript_type(m.type)};"]


def _ts_class(
    name: str, members: Sequence[Member], *, implements: str = "", extra: Sequence[str] = ()
) -> list[str]:
    lines = [f"export class {name}{implements}", "{"]
    for m in members:
        lines += _ts_member(m)
    if members:
        lines.append("")
    lines.append(
        f"    public constructor(init?: Partial<{name}>) {{ (Object as any).assign(this, init); }}"
    )
    return [*lines, *extra, "}", ""]


def _ts_verb(op: OperationDef) -> str:
    """The verb `@servicestack/client` sends the DTO with. It writes an object in a query
    string as "[object Object]": a query-string operation with one (SearchMessages'
    filter) is POSTed instead, to the pre-defined route, which takes any verb and reads
    the body."""
    nested = any(
        m.type.element.kind in ("model", "map") for m in op.request.members if m.location == "QUERY"
    )
    return "POST" if op.verb in QUERY_VERBS and nested else op.verb


def _ts_request(op: OperationDef) -> list[str]:
    routes = [
        f"// @Route({_quoted(_pascal_placeholders(r.path))}, {_quoted(r.verbs[0])})"
        for r in op.typed_routes
    ]
    if op.response:
        implements = f" implements IReturn<{op.response.name}>"
        create = f"    public createResponse() {{ return new {op.response.name}(); }}"
    else:
        implements = " implements IReturnVoid"
        create = "    public createResponse() {}"
    summary = [f"/** @description {_comment(op.summary)} */"] if op.summary else []
    extra = [
        f"    public getTypeName() {{ return {_ts_string(op.name)}; }}",
        f"    public getMethod() {{ return {_ts_string(_ts_verb(op))}; }}",
        create,
    ]
    return [
        *summary,
        *routes,
        *_ts_class(op.name, op.request.members, implements=implements, extra=extra),
    ]


TS_NOTE = (
    "Add ServiceStack Reference for @servicestack/client: new JsonServiceClient(BaseUrl)\n"
    "sends each request to the pre-defined route /api/<Name>. Sessions: set the\n"
    f"{SESSION_HEADER} header (or bearerToken) to the sessionToken from Login."
)


def render_typescript(api: Api, *, base_url: str) -> str:
    """The DTOs as `@servicestack/client` 2.x consumes them: `getTypeName`, `getMethod`
    and `createResponse` on every request class."""
    lines = [
        _header(base_url, TS_NOTE),
        "export interface IReturn<T>\n{\n    createResponse(): T;\n}\n",
        "export interface IReturnVoid\n{\n    createResponse(): void;\n}\n",
    ]
    for enum in api.enums:
        values = [f"    {_identifier(v)} = {_ts_string(v)}," for v in enum.values]
        lines += [f"export enum {enum.name}", "{", *values, "}", ""]
    for type_def in api.types:
        if type_def.description:
            lines.append(f"/** @description {_comment(type_def.description)} */")
        lines += _ts_class(type_def.name, type_def.members)
    for op in api.operations:
        lines += _ts_request(op)
    return "\n".join(lines)


CSHARP_NAMESPACE = "Securesend.ServiceModel"
CSHARP_TYPES_NAMESPACE = CSHARP_NAMESPACE + ".Types"
CSHARP_VERB_MARKERS = {"GET": "IGet", "POST": "IPost", "PUT": "IPut", "DELETE": "IDelete"}
CSHARP_USINGS = (
    "System",
    "System.Collections",
    "System.Collections.Generic",
    "System.Runtime.Serialization",
    "ServiceStack",
    "ServiceStack.DataAnnotations",
    CSHARP_NAMESPACE,
    CSHARP_TYPES_NAMESPACE,
)
CS_NOTE = (
    "Add ServiceStack Reference for ServiceStack.Client: new JsonServiceClient(BaseUrl)\n"
    "sends each request to its [Route]. Sessions: add the header\n"
    f"{SESSION_HEADER} with the SessionToken from Login (or set BearerToken)."
)


def _cs_summary(text: str, indent: str) -> list[str]:
    if not text:
        return []
    escaped = html.escape(" ".join(text.split()), quote=False)
    return [f"{indent}///<summary>", f"{indent}///{escaped}", f"{indent}///</summary>"]


def _cs_member(m: Member, *, request: bool) -> list[str]:
    indent = " " * 8
    required = m.required and not m.nullable
    lines = [
        *_cs_summary(m.description, indent),
        f"{indent}[DataMember{'(IsRequired=true)' if required else ''}]",
    ]
    if request:
        api_member = [f"Description={_quoted(_comment(m.description))}"] if m.description else []
        api_member += ["IsRequired=true"] if required else []
        api_member.append(f"ParameterType={_quoted((m.location or 'BODY').lower())}")
        lines.append(f"{indent}[ApiMember({', '.join(api_member)})]")
    if m.type.element.kind == "enum" and not m.type.element.name:  # a named one is a C# enum
        values = ", ".join(_quoted(v) for v in m.type.allowable)
        lines.append(
            f"{indent}[ApiAllowableValues({_quoted(pascal(m.name))}, "
            f"Values=new string[]{{{values}}})]"
        )
    cs_type = csharp_type(m.type, optional=m.optional)
    return [*lines, f"{indent}public virtual {cs_type} {pascal(m.name)} {{ get; set; }}", ""]


def _cs_class(
    name: str,
    members: Sequence[Member],
    *,
    attributes: Sequence[str] = (),
    bases: str = "",
    request: bool = False,
) -> list[str]:
    lines = [f"    {a}" for a in attributes]
    lines += ["    [DataContract]", f"    public partial class {name}"]
    if bases:
        lines.append(f"        : {bases}")
    lines.append("    {")
    for m in members:
        lines += _cs_member(m, request=request)
    if lines[-1] == "":
        lines.pop()
    return [*lines, "    }", ""]


def _cs_request(op: OperationDef) -> list[str]:
    # Full paths: BaseUrl is the service root, where the client also finds /types/csharp.
    routes = [
        f"[Route({_quoted(_pascal_placeholders(r.path))}, {_quoted(r.verbs[0])})]"
        for r in op.typed_routes
    ]
    returns = f"IReturn<{op.response.name}>" if op.response else "IReturnVoid"
    marker = CSHARP_VERB_MARKERS.get(op.verb)
    summary = [f"[Api({_quoted(_comment(op.summary))})]"] if op.summary else []
    return [
        *_cs_summary(op.summary, "    "),
        *_cs_class(
            op.name,
            op.request.members,
            attributes=[*routes, *summary],
            bases=", ".join(filter(None, (returns, marker))),
            request=True,
        ),
    ]


def render_csharp(api: Api, *, base_url: str) -> str:
    """The DTOs as ServiceStack's C# "Add ServiceStack Reference" writes them: requests in
    one namespace with their routes, responses, nested types and enums in another."""
    lines = [_header(base_url, CS_NOTE), *(f"using {u};" for u in CSHARP_USINGS), ""]
    lines += [f"namespace {CSHARP_NAMESPACE}", "{", ""]
    for op in api.operations:
        lines += _cs_request(op)
    lines += ["}", "", f"namespace {CSHARP_TYPES_NAMESPACE}", "{", ""]
    for enum in api.enums:
        values = [f"        {_identifier(v)}," for v in enum.values]
        lines += [f"    public enum {enum.name}", "    {", *values, "    }", ""]
    for type_def in api.types:
        lines += _cs_summary(type_def.description, "    ")
        lines += _cs_class(type_def.name, type_def.members)
    return "\n".join([*lines, "}", ""])


# --- the endpoints ---------------------------------------------------------------------------


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def register_metadata(app: FastAPI, operations: Sequence[Operation[Any]]) -> None:
    """Serve /metadata, /json/metadata?op=<Name>, /types/typescript and /types/csharp,
    none needing a session. Call it after `registry.register`, whose pre-defined routes
    the pages list.

    Raises ValueError (from `describe`) when the registry cannot be written as DTOs."""
    api = describe(
        operations,
        title=app.title,
        description=app.description,
        predefined=_predefined_routes(app),
    )

    async def index(_: Request) -> Response:
        return Response(render_index(api), media_type=HTML_TYPE)

    async def operation_page(request: Request) -> Response:
        name = request.query_params.get("op")
        if not name:
            return await index(request)
        op = api.operation(name)
        if op is None:
            return error_response(request, ApiError(errors.NOT_FOUND))
        page = render_operation(api, op, host=request.headers.get("host", ""))
        return Response(page, media_type=HTML_TYPE)

    async def typescript(request: Request) -> Response:
        return Response(render_typescript(api, base_url=_base_url(request)), media_type=TEXT_TYPE)

    async def csharp(request: Request) -> Response:
        return Response(render_csharp(api, base_url=_base_url(request)), media_type=TEXT_TYPE)

    for path, endpoint in (
        (INDEX_PAGE, index),
        (METADATA_PAGE, operation_page),
        (TYPESCRIPT_TYPES, typescript),
        (CSHARP_TYPES, csharp),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)

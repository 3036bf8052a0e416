"""The TypeScript DTOs at /types/typescript, as ServiceStack's "Add ServiceStack
Reference" writes them for `@servicestack/client`, rendered from the description in
`model`."""

from __future__ import annotations

from collections.abc import Sequence

from api_shim.metadata.model import (
    QUERY_VERBS,
    Api,
    DataType,
    Member,
    OperationDef,
    comment_text,
    double_quoted,
    dto_header,
    enum_member,
    pascal_placeholders,
)
from api_shim.pipeline import SESSION_HEADER


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
    lines = [f"    /** @description {comment_text(m.description)} */"] if m.description else []
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
        f"// @Route({double_quoted(pascal_placeholders(r.path))}, {double_quoted(r.verbs[0])})"
        for r in op.typed_routes
    ]
    if op.response:
        implements = f" implements IReturn<{op.response.name}>"
        create = f"    public createResponse() {{ return new {op.response.name}(); }}"
    else:
        implements = " implements IReturnVoid"
        create = "    public createResponse() {}"
    summary = [f"/** @description {comment_text(op.summary)} */"] if op.summary else []
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
        dto_header(base_url, TS_NOTE),
        "export interface IReturn<T>\n{\n    createResponse(): T;\n}\n",
        "export interface IReturnVoid\n{\n    createResponse(): void;\n}\n",
    ]
    for enum in api.enums:
        values = [f"    {enum_member(v)} = {_ts_string(v)}," for v in enum.values]
        lines += [f"export enum {enum.name}", "{", *values, "}", ""]
    for type_def in api.types:
        if type_def.description:
            lines.append(f"/** @description {comment_text(type_def.description)} */")
        lines += _ts_class(type_def.name, type_def.members)
    for op in api.operations:
        lines += _ts_request(op)
    return "\n".join(lines)

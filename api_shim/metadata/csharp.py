"""The C# DTOs at /types/csharp, as ServiceStack's "Add ServiceStack Reference" writes
them for `ServiceStack.Client`, rendered from the description in `model`."""

from __future__ import annotations

import html
from collections.abc import Sequence

from api_shim.metadata.model import (
    Api,
    Member,
    OperationDef,
    comment_text,
    csharp_type,
    double_quoted,
    dto_header,
    enum_member,
    pascal,
    pascal_placeholders,
)
from api_shim.pipeline import SESSION_HEADER

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
        api_member = (
            [f"Description={double_quoted(comment_text(m.description))}"] if m.description else []
        )
        api_member += ["IsRequired=true"] if required else []
        api_member.append(f"ParameterType={double_quoted((m.location or 'BODY').lower())}")
        lines.append(f"{indent}[ApiMember({', '.join(api_member)})]")
    if m.type.element.kind == "enum" and not m.type.element.name:  # a named one is a C# enum
        values = ", ".join(double_quoted(v) for v in m.type.allowable)
        lines.append(
            f"{indent}[ApiAllowableValues({double_quoted(pascal(m.name))}, "
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
        f"[Route({double_quoted(pascal_placeholders(r.path))}, {double_quoted(r.verbs[0])})]"
        for r in op.typed_routes
    ]
    returns = f"IReturn<{op.response.name}>" if op.response else "IReturnVoid"
    marker = CSHARP_VERB_MARKERS.get(op.verb)
    summary = [f"[Api({double_quoted(comment_text(op.summary))})]"] if op.summary else []
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
    lines = [dto_header(base_url, CS_NOTE), *(f"using {u};" for u in CSHARP_USINGS), ""]
    lines += [f"namespace {CSHARP_NAMESPACE}", "{", ""]
    for op in api.operations:
        lines += _cs_request(op)
    lines += ["}", "", f"namespace {CSHARP_TYPES_NAMESPACE}", "{", ""]
    for enum in api.enums:
        values = [f"        {enum_member(v)}," for v in enum.values]
        lines += [f"    public enum {enum.name}", "    {", *values, "    }", ""]
    for type_def in api.types:
        lines += _cs_summary(type_def.description, "    ")
        lines += _cs_class(type_def.name, type_def.members)
    return "\n".join([*lines, "}", ""])

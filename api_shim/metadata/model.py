"""The operation registry described once, for the metadata pages and the DTO files.

`describe` walks the `Operation` objects and the JSON schemas of their request and
response models into a small neutral description (`Api`) that the HTML pages
(`pages`), the TypeScript DTOs (`typescript`) and the C# DTOs (`csharp`) each render.
What two of them share lives here too, written once: where each is served, sample
values, C# type names, and how a DTO file quotes and comments its text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from api_shim.registry import PREFIXES, Operation, error_kinds
from api_shim.responses import ResponseStatus
from api_shim.wire import GUID_SCHEMA
from worker.domain import clock
from worker.domain.errors import ErrorKind

# Where the index page and the DTO files are served (an operation's page: wire.METADATA_PAGE):
# `endpoints` serves them and the pages link them.
INDEX_PAGE = "/metadata"
TYPESCRIPT_TYPES = "/types/typescript"
CSHARP_TYPES = "/types/csharp"

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


# --- C# type names, which the HTML pages show too ------------------------------------------

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


# --- names and paths as the DTO files and the pages write them ----------------------------


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def fill_placeholders(path: str, replace: Callable[[str], str]) -> str:
    """`path` with each `{placeholder}` replaced by `replace(placeholder)`."""
    return re.sub(r"\{([^}]*)\}", lambda m: replace(m.group(1)), path)


def pascal_placeholders(path: str) -> str:
    """`/messages/{messageGuid}` as ServiceStack declares it: `/messages/{MessageGuid}`."""
    return fill_placeholders(path, lambda name: "{" + pascal(name) + "}")


# --- the text of both DTO files --------------------------------------------------------------


def dto_header(base_url: str, note: str) -> str:
    """ServiceStack's header: its tools read `BaseUrl` to fetch the file again."""
    date = clock.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"/* Options:\nDate: {date}\nBaseUrl: {comment_text(base_url)}\n\n{note}\n*/\n"


def comment_text(text: str) -> str:
    """`text` safe inside a block or line comment: on one line, never closing it."""
    return " ".join(text.split()).replace("*/", "*\\/")


def enum_member(value: str) -> str:
    """An enum value as a member name (the values here are already PascalCase words)."""
    name = re.sub(r"\W", "_", value)
    return f"_{name}" if not name or name[0].isdigit() else name


def double_quoted(text: str) -> str:
    """A double-quoted string literal, valid in C# (and in TypeScript)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

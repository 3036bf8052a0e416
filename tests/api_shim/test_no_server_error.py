"""No input, however malformed, gets a 500 (SPEC 2): deep nesting, NUL characters and
lone surrogates by hand, then arbitrary strings and structures thrown by Hypothesis at
every field of every operation, on PostgreSQL (which refuses what SQLite would store)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_shim.registry import Operation
from api_shim.routes import all_operations
from tests.factories import World
from tests.support import Stack, assert_error

SESSION = "x-sm-session-token"
MAX_EXAMPLES = int(os.environ.get("PROPERTY_MAX_EXAMPLES", "30"))  # per operation


@pytest.fixture(scope="module")
def world(postgres_stack: Stack) -> World:
    world = World(postgres_stack, "fuzz" + uuid.uuid4().hex[:6]).setup()
    world.sent_message([world.user("reader")])
    return world


@pytest.fixture(scope="module")
def attachment(world: World, client: httpx.Client) -> str:
    """A file of one of the world's drafts, its one chunk not uploaded."""
    answer = client.post(
        "/api/v1/attachments/precreate",
        json={
            "messageGuid": world.draft(),
            "attachmentPlaceholders": [{"fileName": "f.txt", "totalBytesLength": 16}],
        },
        headers={SESSION: world.token},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["attachmentPlaceholders"][0]["attachmentGuid"])


@pytest.fixture(scope="module")
def client(postgres_stack: Stack) -> Iterator[httpx.Client]:
    with postgres_stack.client() as client:
        yield client


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deep_nesting_is_a_serialization_error(world: World, client: httpx.Client) -> None:
    guid = world.draft(to=[world.user("deep")])
    headers = {SESSION: world.token, "content-type": "application/json"}
    deep_list = client.put(
        f"/api/v1/messages/{guid}/send", content=_nested(100_000), headers=headers
    )
    deep_object = client.put(
        f"/api/v1/messages/{guid}/save",
        content=b'{"x":' * 600 + b"1" + b"}" * 600,
        headers=headers,
    )
    deep_query = client.get(
        "/api/v1/messages/search?filter=" + quote("{a:" * 600 + "b" + "}" * 600),
        headers=headers,
    )
    shallow = client.put(
        f"/api/v1/messages/{guid}/save",
        content=b'{"ignored":' + _nested(500) + b', "subject": "still saved"}',
        headers=headers,
    )
    for response in (deep_list, deep_object, deep_query):
        assert response.status_code == 400, response.text
        assert response.json()["responseStatus"]["errorCode"] == "SerializationException"
    assert shallow.status_code == 200, shallow.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("Subject", "a\x00b"), ("Body", "\ud800 alone"), ("To", ["x\x00@example.com"])],
)
def test_nul_and_lone_surrogates_are_validation_errors(
    world: World, client: httpx.Client, field: str, value: Any
) -> None:
    guid = world.draft(to=[world.user("nul")], subject="before")
    response = client.put(
        f"/api/v1/messages/{guid}/save",
        content=json.dumps({field.lower(): value}),  # ASCII, lone surrogates as \\ud800
        headers={SESSION: world.token, "content-type": "application/json"},
    )
    body = assert_error(
        response,
        400,
        "ValidationException",
        f"'{field}' must not contain NUL characters or unpaired surrogates",
    )
    assert [e["fieldName"] for e in body["errors"]] == [field]
    subject = client.get(f"/api/v1/messages/{guid}", headers={SESSION: world.token}).json()
    assert subject["subject"] == "before"  # nothing was saved


def test_nul_in_a_query_string_or_a_login_is_a_validation_error(
    world: World, client: httpx.Client
) -> None:
    search = client.get(
        "/api/v1/messages/search?filter=" + quote("{searchCriteria:'a\x00'}"),
        headers={SESSION: world.token},
    )
    login = client.post("/api/v1/login", json={"username": "a\x00@example.com", "password": "x"})
    assert search.json()["responseStatus"]["errors"][0]["fieldName"] == "Filter.SearchCriteria"
    assert login.json()["responseStatus"]["errors"][0]["fieldName"] == "Username"
    assert search.status_code == login.status_code == 400


# --- arbitrary input ----------------------------------------------------------------------

TRICKY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\udfff\ud800",
    "Text",
    "html",
    "ReplyAll",
    "Inbox",
    uuid.uuid4().hex,
    str(uuid.uuid4()).upper(),
    "/Date(99999999999999999)/",
    "/Date(-62135596800001)/",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+14:00",
    "{types:[",
    '{ "types":[Inbox], "searchCriteria": \'x\'}',
    "[" * 600,
    "x" * 5000,
    "%00",
    "'; DROP TABLE messages; --",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=30)
    | st.sampled_from(TRICKY_STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
OPERATIONS = all_operations()
plain_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
unstorable_text = st.tuples(plain_text, st.sampled_from(["\x00", "\ud800", "\udfff"])).map(
    lambda parts: parts[0][: len(parts[0]) // 2] + parts[1] + parts[0][len(parts[0]) // 2 :]
)
any_text = st.sampled_from(TRICKY_STRINGS) | plain_text | unstorable_text


def _typed(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the schema's type, its edge cases first: strings of any characters (NUL
    and lone surrogates included), integers in and just past their bounds, enum values
    in any case, valid GUIDs and dates."""
    if "$ref" in schema:
        return _typed(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return st.one_of([_typed(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        values = [str(v) for v in schema["enum"]]
        return st.sampled_from(values + [v.upper() for v in values]) | any_text
    if kind == "string":
        special: list[str] = []
        if "pattern" in schema:  # a GUID
            special = [uuid.uuid4().hex, str(uuid.uuid4())]
        if schema.get("format") == "date-time":
            special = ["2030-01-01T00:00:00Z", "/Date(1900000000000-0500)/", ""]
        return st.sampled_from(special) | any_text if special else any_text
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63)
        return st.integers(min_value=low - 1, max_value=high + 1)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_typed(schema.get("items", {}), defs), max_size=4)
    if kind == "object":
        properties = schema.get("properties", {})
        return st.fixed_dictionaries(
            {}, optional={name: _typed(sub, defs) for name, sub in properties.items()}
        )
    return st.none()


def _recased(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    if not body:
        return st.just(body)
    casings = (st.sampled_from([k, k.upper(), k[:1].upper() + k[1:]]) for k in body)
    return st.tuples(*casings).map(lambda keys: dict(zip(keys, body.values(), strict=True)))


def _bodies(op: Operation[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Request bodies of `op`: its properties typed, in any casing, one of them now and
    then any JSON value at all, and unknown properties beside them."""
    schema = op.request.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    typed = st.fixed_dictionaries(
        {}, optional={name: _typed(sub, defs) for name, sub in properties.items()}
    )
    anything = (
        st.dictionaries(st.sampled_from(sorted(properties)), json_values, max_size=1)
        if properties
        else st.just({})
    )
    unknown = st.dictionaries(st.text(max_size=10), json_values, max_size=2)
    return st.tuples(typed.flatmap(_recased), anything, unknown).map(
        lambda parts: {**parts[2], **parts[0], **parts[1]}
    )


def _path(template: str, values: dict[str, str]) -> str:
    parts = []
    for part in template.split("/"):
        if part.startswith("{"):
            part = quote(values[part.strip("{}")], safe="", errors="surrogatepass")
        parts.append(part)
    return "/api/v1" + "/".join(parts)


def _as_query(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize(
    "op", [op for op in OPERATIONS if op.name != "Logout"], ids=lambda op: op.name
)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_gets_a_server_error(
    world: World, client: httpx.Client, attachment: str, op: Operation[Any], data: st.DataObject
) -> None:
    body = data.draw(_bodies(op), label="body")
    method, template = op.routes[0]
    real = {"messageGuid": world.draft(), "jobId": uuid.uuid4().hex, "attachmentGuid": attachment}
    path_values = {
        name: data.draw(
            st.sampled_from([value] * 3 + [uuid.uuid4().hex, "", "0/", "%2F"])
            | st.text(max_size=40),
            label=name,
        )
        for name, value in real.items()
        if "{" + name + "}" in template
    }
    if "{chunkNumber}" in template:
        path_values["chunkNumber"] = data.draw(
            st.sampled_from(["0", "1", "2", "-1", str(10**9), str(2**63)])
            | st.text(min_size=1, max_size=12),
            label="chunkNumber",
        )
    predefined = data.draw(st.booleans(), label="predefined route")
    headers = {SESSION: world.token, "content-type": "application/json"}
    if predefined:
        response = client.post(
            f"/json/reply/{op.name}", content=json.dumps({**body, **path_values}), headers=headers
        )
    elif method == "GET":
        query = urlencode({str(k): _as_query(v) for k, v in body.items()}, errors="surrogatepass")
        response = client.get(f"{_path(template, path_values)}?{query}", headers=headers)
    else:
        response = client.request(
            method, _path(template, path_values), content=json.dumps(body), headers=headers
        )
    assert response.status_code < 500, (response.request.url, body, response.text)
    if response.headers.get("content-type") == "application/octet-stream":
        return  # a file (DownloadAttachment)
    answer = response.json()
    if response.status_code >= 400:
        assert set(answer["responseStatus"]) == {"errorCode", "message", "errors", "meta"}


_BOUNDARY = "b0undary"
_multipart_parts = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b'Content-Disposition: form-data; name="upload"; filename="f"',
                b"Content-Disposition: form-data;name=upload",
                b"Content-Disposition: form-data",
                b"Content-Type: application/octet-stream",
                b"",
            ]
        ),
        st.binary(max_size=40),
    ),
    max_size=3,
)


def _multipart(parts: list[tuple[bytes, bytes]], closed: bool) -> bytes:
    body = b"".join(
        b"--" + _BOUNDARY.encode() + b"\r\n" + header + b"\r\n\r\n" + content + b"\r\n"
        for header, content in parts
    )
    return body + (b"--" + _BOUNDARY.encode() + b"--\r\n" if closed else b"")


@settings(
    max_examples=MAX_EXAMPLES * 3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=200) | st.builds(_multipart, _multipart_parts, st.booleans()),
    content_type=st.sampled_from(
        [
            f"multipart/form-data; boundary={_BOUNDARY}",
            f'multipart/form-data;charset=UTF-8;boundary="{_BOUNDARY}"',
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "application/octet-stream",
            "text/plain",
        ]
    ),
)
def test_no_chunk_upload_gets_a_server_error(
    world: World, client: httpx.Client, attachment: str, body: bytes, content_type: str
) -> None:
    response = client.post(
        f"/api/v1/attachments/{attachment}/chunk/1",
        content=body,
        headers={SESSION: world.token, "content-type": content_type},
    )
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["responseStatus"]["errorCode"] == "ValidationException"

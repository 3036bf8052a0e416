"""/openapi.json describes every operation, its request and every error it can answer."""

from __future__ import annotations

from api_shim.routes import all_operations
from tests.support import Stack


def test_openapi_lists_every_operation_with_its_errors(sqlite_stack: Stack) -> None:
    with sqlite_stack.client() as client:
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    operations = {
        op["operationId"]: (path, method, op)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
    }
    for operation in all_operations():
        path, method, op = operations[operation.name]
        assert path.startswith("/api/v1/")
        assert method.upper() == operation.routes[0][0]
        assert "200" in op["responses"]
        descriptions = " ".join(r["description"] for r in op["responses"].values())
        for kind in operation.errors:
            assert f"{kind.code}: {kind.message}" in descriptions, (operation.name, kind)
            error = op["responses"][str(kind.http_status)]["content"]["application/json"]
            assert error["schema"]["$ref"] == "#/components/schemas/ErrorResponse"
        if operation.authenticated:
            assert (
                "811: The user session is no longer valid." in op["responses"]["401"]["description"]
            )
        if operation.authenticated:
            assert {"session": []} in op["security"]
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                assert "{" + parameter["name"] + "}" in path
    send = operations["SendMessage"][2]
    assert set(send["responses"]) >= {"200", "202", "400", "401", "403", "404", "406", "503"}
    body = send["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {
        "password",
        "inviteNewUsers",
        "sendEmailNotification",
        "craCode",
        "notificationFormats",
    } <= set(body)
    assert "ErrorResponse" in spec["components"]["schemas"]

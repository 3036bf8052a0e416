"""A stock ServiceStack TypeScript client sends a message: `JsonServiceClient` from
`@servicestack/client` (npm) with the DTOs of /types/typescript, compiled by `tsc` with
`strict` on and run by `node` against the live API. The npm packages are pinned in
`typescript/package-lock.json` and installed with `npm ci` into a temporary copy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Stack, unavailable

PACKAGE = Path(__file__).parent / "typescript"
NPM_CI_TIMEOUT = 60
TSC_TIMEOUT = 60
RUN_TIMEOUT = 45  # a send waits for the worker; SEND_WAIT_SECONDS is 20 in the stack

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmitOnError": True,
        "target": "ES2022",
        "module": "node16",
        "moduleResolution": "node16",
        "lib": ["ES2022", "DOM"],  # the client's types use fetch's Headers and Response
        "rootDir": ".",
        "outDir": "out",
    },
    "files": ["main.ts"],
}

# Logs in as the sender, creates, saves and sends a message and reads it back; then the
# recipient searches their Inbox with a nested `filter`, once with the DTO's own verb and
# once forcing a GET. Prints one JSON line.
PROGRAM = """\
import { JsonServiceClient } from '@servicestack/client';
import {
    BodyFormat, Folder, GetMessage, Login, MessageAction, PreCreateMessage, ResponseStatus,
    SaveMessage, SearchFilter, SearchMessages, SearchMessagesResponse, SendMessage,
} from './dtos';
import { settings } from './settings';

interface Outcome {
    status: number;
    url: string;
    errorCode?: string;
    guids?: string[];
}

async function session(username: string, password: string): Promise<JsonServiceClient> {
    const client = new JsonServiceClient(settings.baseUrl);
    const login = await client.send(new Login({ username, password, cookieless: true }));
    client.headers.set('x-sm-session-token', login.sessionToken);
    return client;
}

async function outcome(
    client: JsonServiceClient, call: () => Promise<SearchMessagesResponse>,
): Promise<Outcome> {
    let status = 0;
    let url = '';
    client.urlFilter = (requested: string) => { url = requested; };
    client.responseFilter = (res: Response) => { status = res.status; };
    try {
        const found = await call();
        return { status, url, guids: found.results.map(m => m.guid) };
    } catch (e) {
        const error = (e as { responseStatus?: ResponseStatus }).responseStatus;
        return { status, url, errorCode: error?.errorCode };
    }
}

async function main(): Promise<void> {
    const sender = await session(settings.sender, settings.senderPassword);
    const draft = await sender.send(new PreCreateMessage({ actionCode: MessageAction.New }));
    await sender.send(new SaveMessage({
        messageGuid: draft.messageGuid,
        to: [settings.recipient],
        subject: 'From TypeScript',
        body: 'Typed end to end',
        bodyFormat: BodyFormat.Text,
    }));
    const sent = await sender.send(new SendMessage({
        messageGuid: draft.messageGuid, notificationFormats: ['Text'],
    }));
    const message = await sender.send(new GetMessage({ messageGuid: draft.messageGuid }));

    const reader = await session(settings.recipient, settings.recipientPassword);
    const filter = new SearchFilter({ types: [Folder.Inbox] });
    const searchBySend = await outcome(reader, () => reader.send(new SearchMessages({ filter })));
    const searchByGet = await outcome(reader, () => reader.get(new SearchMessages({ filter })));
    console.log(JSON.stringify({
        messageGuid: draft.messageGuid,
        sent,
        message: { guid: message.guid, status: message.status, subject: message.subject },
        searchBySend,
        searchByGet,
    }));
}

main().catch((e: unknown) => {
    console.error(JSON.stringify(e));
    throw e;  // unhandled: node exits with 1
});
"""


def _run(args: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group and kill the whole group if it outlives
    `timeout` (npm may start processes of its own). Raises TimeoutExpired then."""
    with subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(name, FileNotFoundError(f"{name} is not on PATH"))
    assert path is not None
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of tests/clients/typescript with its pinned packages installed."""
    _tool("node")  # needed after the install: no use installing without it
    npm = _tool("npm")
    folder = tmp_path_factory.mktemp("typescript-client")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PACKAGE / name, folder / name)
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
    try:
        installed = _run(command, cwd=folder, timeout=NPM_CI_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        unavailable("the npm registry", e)
    if installed.returncode != 0:
        unavailable("the npm registry", RuntimeError(f"npm ci failed: {installed.stderr[-2000:]}"))
    return folder


def _write_sources(folder: Path, *, dtos: str, settings: dict[str, str]) -> None:
    (folder / "dtos.ts").write_text(dtos)
    (folder / "settings.ts").write_text(f"export const settings = {json.dumps(settings)};\n")
    (folder / "main.ts").write_text(PROGRAM)
    (folder / "tsconfig.json").write_text(json.dumps(TSCONFIG, indent=2))


def _compile_and_run(folder: Path) -> dict[str, Any]:
    node = _tool("node")
    tsc = str(folder / "node_modules" / "typescript" / "bin" / "tsc")
    compiled = _run([node, tsc, "-p", "tsconfig.json"], cwd=folder, timeout=TSC_TIMEOUT)
    assert compiled.returncode == 0, f"tsc:\n{compiled.stdout}{compiled.stderr}"
    ran = _run([node, str(folder / "out" / "main.js")], cwd=folder, timeout=RUN_TIMEOUT)
    assert ran.returncode == 0, f"node:\n{ran.stdout}{ran.stderr}"
    return dict(json.loads(ran.stdout.strip().splitlines()[-1]))


def test_servicestack_typescript_client_sends_a_message(
    sqlite_stack: Stack, project: Path, unique: str
) -> None:
    sender, sender_password = sqlite_stack.make_user(unique, name="ts-sender")
    recipient, recipient_password = sqlite_stack.make_user(unique, name="ts-reader")
    dtos = httpx.get(sqlite_stack.url("/types/typescript"), timeout=10)
    assert dtos.status_code == 200
    _write_sources(
        project,
        dtos=dtos.text,
        settings={
            "baseUrl": sqlite_stack.url(""),
            "sender": sender,
            "senderPassword": sender_password,
            "recipient": recipient,
            "recipientPassword": recipient_password,
        },
    )

    result = _compile_and_run(project)

    guid = result["messageGuid"]
    assert len(guid) == 32
    assert result["sent"]["notificationSent"] is True
    assert result["sent"]["notificationBodyText"] and result["sent"]["notificationBodyHtml"] is None
    assert result["message"] == {"guid": guid, "status": "Sent", "subject": "From TypeScript"}
    # The stock client would write the filter object in a query string as "[object
    # Object]": the generated DTO sends SearchMessages as a POST to the pre-defined route,
    # which carries the filter in its JSON body; the client's explicit GET is refused with a
    # 400 naming the filter (never a filter silently dropped).
    by_send, by_get = result["searchBySend"], result["searchByGet"]
    assert by_send["status"] == 200 and by_send["url"].endswith("/api/SearchMessages")
    assert by_send["guids"] == [guid]
    assert "filter=%5Bobject%20Object%5D" in by_get["url"]
    assert (by_get["status"], by_get["errorCode"]) == (400, "ValidationException")

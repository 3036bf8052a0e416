"""Traces (worker/telemetry.py): one SendMessage that arrives with a W3C traceparent is one
trace, from the API's request span through the send task and its database work to each
SMTP delivery of its emails, exported over OTLP/HTTP to a receiver in this process; no
span carries a subject, body, password, CRA code, token or email address. A send enqueued
straight to Celery continues the trace its task headers name. Without the OpenTelemetry
environment nothing is set up at all.
"""

from __future__ import annotations

import gzip
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from sqlalchemy import select

from tests.factories import World
from tests.smtp_sink import SmtpSink
from tests.support import (
    MAIL_RETRY_ENV,
    REDIS_TEST_URL,
    Stack,
    StackConfig,
    create_postgres_database,
    drop_postgres_database,
    flush_redis,
    free_port,
    run_python,
)
from tests.webhook_receiver import Receiver, running_receiver
from worker import telemetry
from worker.celery_factory import create_app
from worker.client import build_send_job, send_job_options
from worker.models import User
from worker.queues import SEND_TASK

ROOT = Path(__file__).resolve().parent.parent
SEND_SPAN = f"run/{SEND_TASK}"
PUBLISH_SPAN = f"apply_async/{SEND_TASK}"

# --- an OTLP/HTTP receiver ----------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict[str, Any]
    values: tuple[str, ...]  # every value it carries: its own, its events' and links' attributes


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _plain(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


class OtlpReceiver:
    """What an OpenTelemetry collector does with OTLP/HTTP protobuf traces, reduced to
    keeping the spans: POST /v1/traces, an ExportTraceServiceRequest (gzip or not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = _attributes(span.attributes)
                    nested = [_attributes(e.attributes) for e in span.events]
                    nested += [_attributes(link.attributes) for link in span.links]
                    values = [str(v) for a in (attributes, *nested) for v in a.values()]
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes=attributes,
                            values=(span.name, *values),
                        )
                    )
        with self._lock:
            self._spans.extend(received)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 30
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while not done(spans := self.spans(trace_id)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return spans


# --- a stack that exports its traces there ---------------------------------------------------


def _tracing_redis_url() -> str:
    """The test Redis database, or the next one while a stack is using it (the session's
    PostgreSQL stack, started by an earlier module): this stack's workers must not take
    that stack's jobs, nor its workers this one's. TEST_TRACING_REDIS_URL overrides."""
    override = os.environ.get("TEST_TRACING_REDIS_URL")
    if override:
        return override
    base, _, index = REDIS_TEST_URL.rpartition("/")
    database = int(index or 0)
    try:
        client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3)
        with client:
            clients = client.client_list()
    except redis.RedisError:
        return REDIS_TEST_URL  # flush_redis says what is wrong
    in_use = any(
        int(c.get("db", -1)) == database and not str(c.get("cmd", "")).startswith("client")
        for c in clients
    )
    return f"{base}/{(database + 1) % 16}" if in_use else REDIS_TEST_URL


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver, smtp_sink: SmtpSink
) -> Iterator[Stack]:
    redis_url = _tracing_redis_url()
    flush_redis(redis_url)
    database_url = create_postgres_database()
    env = {
        **MAIL_RETRY_ENV,
        "SMTP_URL": smtp_sink.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": "",  # each process names itself
        "OTEL_RESOURCE_ATTRIBUTES": "",
    }
    config = StackConfig(name="traced", database_url=database_url, redis_url=redis_url, env=env)
    try:
        stack = Stack.start(config, var_dir=tmp_path_factory.mktemp("traced"), api_port=free_port())
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        drop_postgres_database(database_url)
        flush_redis(redis_url)


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def _under(spans: list[ReceivedSpan], ancestor: ReceivedSpan) -> list[ReceivedSpan]:
    """The spans below `ancestor` in the tree `spans` form."""
    by_id = {s.span_id: s for s in spans}
    found = []
    for span in spans:
        parent = by_id.get(span.parent_id)
        while parent is not None and parent is not ancestor:
            parent = by_id.get(parent.parent_id)
        if parent is ancestor:
            found.append(span)
    return found


def _secrets_in(spans: list[ReceivedSpan], secret_values: dict[str, str]) -> list[str]:
    return [
        f"{span.service} {span.name}: {what}"
        for span in spans
        for what, secret in secret_values.items()
        if any(secret.lower() in value.lower() for value in span.values)
    ]


# --- the tests -------------------------------------------------------------------------------


def test_one_send_is_one_trace_from_the_api_to_the_smtp_delivery(
    traced_stack: Stack, receiver: OtlpReceiver, smtp_sink: SmtpSink
) -> None:
    with running_receiver() as hooks:
        _one_send_is_one_trace(traced_stack, receiver, smtp_sink, hooks)


def _one_send_is_one_trace(
    traced_stack: Stack, receiver: OtlpReceiver, smtp_sink: SmtpSink, hooks: Receiver
) -> None:
    unique = secrets.token_hex(4)
    world = World(traced_stack, unique, features={"cra": True}).setup()
    hook_secret = world.hook(hooks.url(f"/traced/{unique}"), events=["message.sent"])
    reader = world.user("reader")
    invitee = f"invitee-{unique}@example.org"
    subject, body = f"Merger plans {unique}", f"Confidential body text {unique}"
    password, cra = f"fyeo-pw-{unique}", f"cra-{unique}"
    guid = world.draft(
        to=[reader],
        cc=[invitee],
        subject=subject,
        body=body,
        messageOptions={"fyeoType": "UniquePassword"},
    )
    file_content = f"file content {unique}".encode()
    (place,) = world.files().placeholders(guid, {"plans.txt": len(file_content)})
    world.files().upload_all(place, file_content)
    traceparent, trace_id, caller_span = _traceparent()
    with traced_stack.client() as client:
        response = client.put(
            f"/api/v1/messages/{guid}/send",
            json={"password": password, "craCode": cra, "inviteNewUsers": True},
            headers={"x-sm-session-token": world.token, "traceparent": traceparent},
        )
    assert response.status_code == 200, response.text
    assert smtp_sink.wait_for(reader) and smtp_sink.wait_for(invitee)

    def complete(spans: list[ReceivedSpan]) -> bool:
        delivered = [
            s
            for s in _named(spans, "securesend.email.deliver")
            if s.attributes.get("securesend.email.status") == "sent"
        ]
        by_id = {s.span_id for s in spans}
        return (
            len(delivered) >= 2
            and bool(_named(spans, "securesend.webhook.deliver"))
            and bool(_named(spans, SEND_SPAN))
            and any(s.service == "securesend-api" and s.parent_id == caller_span for s in spans)
            # every span's parent has arrived (the caller's own span is not ours to send)
            and all(s.parent_id in by_id or s.parent_id == caller_span for s in spans)
        )

    spans = receiver.wait_for(trace_id, complete)
    assert complete(spans), sorted((s.service, s.name) for s in spans)

    # The API: the request span continues the caller's span; the publish is under it.
    (request,) = [s for s in spans if s.service == "securesend-api" and s.parent_id == caller_span]
    assert request.name == "PUT /api/v1/messages/{messageGuid}/send"
    (publish,) = _named(spans, PUBLISH_SPAN)
    assert publish.service == "securesend-api" and publish in _under(spans, request)

    # The worker: the send task under the publish, with its ids and code, and the
    # database work under the task.
    (send,) = _named(spans, SEND_SPAN)
    assert send.service == "securesend-worker" and send.parent_id == publish.span_id
    assert send.attributes["securesend.message_guid"] == guid
    assert send.attributes["securesend.job_id"] == send.attributes["messaging.message.id"]
    assert send.attributes["securesend.result_code"] == "OK"
    assert send.attributes["securesend.http_status"] == 200
    below_send = _under(spans, send)
    statements = [s for s in below_send if s.attributes.get("db.system") == "postgresql"]
    # The send's writes, the job's answer among them, are one statement on PostgreSQL.
    assert any(
        "UPDATE send_jobs" in str(s.attributes.get("db.statement", "")) for s in statements
    ), sorted(s.name for s in below_send)
    assert all(s.service == "securesend-worker" for s in below_send)
    assert any(s.attributes.get("db.system") == "postgresql" for s in _under(spans, request))

    # The delivery: the drain task the send asked for, and one span per email, each under
    # the send that queued it.
    assert any(s.name == "run/securesend.mail.drain" for s in below_send)
    deliveries = _named(spans, "securesend.email.deliver")
    assert {d.attributes["securesend.email.kind"] for d in deliveries} == {
        "notification",
        "invitation",
    }
    for delivery in deliveries:
        assert delivery.parent_id == send.span_id
        assert delivery.attributes["securesend.email.status"] == "sent"
        assert delivery.attributes["securesend.email.attempt"] == 1
        assert isinstance(delivery.attributes["securesend.email.id"], int)

    # The webhook event the send queued: one span per delivery attempt, under the send.
    (hook,) = _named(spans, "securesend.webhook.deliver")
    assert hook.parent_id == send.span_id and hook.service == "securesend-worker"
    assert hook.attributes["securesend.webhook.event"] == "message.sent"
    assert hook.attributes["securesend.webhook.outcome"] == "sent"
    assert str(hook.attributes["securesend.webhook.endpoint"]).startswith("ep_")

    # Any request field may come in the query string: the request span keeps its path only.
    ping_parent, ping_trace, ping_caller = _traceparent()
    with traced_stack.client() as client:
        ping = client.get(
            "/api/v1/public/ping",
            params={"password": password, "craCode": cra, "to": reader},
            headers={"traceparent": ping_parent, "x-sm-session-token": world.token},
        )
    assert ping.status_code == 200
    served = receiver.wait_for(
        ping_trace, lambda spans: any(s.parent_id == ping_caller for s in spans)
    )
    (pinged,) = [s for s in served if s.parent_id == ping_caller]
    assert pinged.attributes["http.target"] == "/api/v1/public/ping"
    assert str(pinged.attributes["http.url"]).endswith("/api/v1/public/ping")

    # Nothing secret anywhere, in this trace or any other the stack sent.
    time.sleep(0.5)
    found = _secrets_in(
        receiver.spans(),
        {
            "subject": subject,
            "body": body,
            "password": password,
            "CRA code": cra,
            "recipient address": reader,
            "invitee address": invitee,
            "sender address": world.sender,
            "account password": world.password,
            "session token": world.token,
            "file content": file_content.decode(),
            "webhook secret": hook_secret,
            "webhook URL": hooks.url(f"/traced/{unique}"),
        },
    )
    assert found == []


def test_a_send_enqueued_as_a_task_continues_the_trace_in_its_headers(
    traced_stack: Stack, receiver: OtlpReceiver, smtp_sink: SmtpSink
) -> None:
    unique = secrets.token_hex(4)
    world = World(traced_stack, unique).setup()
    reader = world.user("reader")
    guid = world.draft(to=[reader], subject=f"Direct {unique}")
    with traced_stack.database.read_session() as session:
        sender_guid = session.scalars(select(User.guid).where(User.email == world.sender)).one()
    payload = build_send_job(
        sender_guid=sender_guid, message_guid=guid, secret_key=traced_stack.settings.secret_key
    )
    traceparent, trace_id, caller_span = _traceparent()
    app = create_app(traced_stack.settings)
    try:
        result = app.send_task(
            SEND_TASK,
            args=[payload],
            headers={"traceparent": traceparent},
            **send_job_options(payload),
        ).get(timeout=30)
    finally:
        app.close()
    assert result["httpStatus"] == 200, result
    assert smtp_sink.wait_for(reader)

    spans = receiver.wait_for(
        trace_id, lambda spans: bool(_named(spans, "securesend.email.deliver"))
    )
    (send,) = _named(spans, SEND_SPAN)
    assert send.parent_id == caller_span
    assert send.attributes["securesend.message_guid"] == guid
    (delivery,) = _named(spans, "securesend.email.deliver")
    assert delivery.parent_id == send.span_id
    assert delivery.attributes["securesend.email.kind"] == "notification"


NOTHING_WITHOUT_THE_ENVIRONMENT = """
import sys, threading
from worker import telemetry
assert telemetry.configure_tracing("securesend-test") is False
from api_shim.app import create_app
create_app()
assert not telemetry.enabled() and telemetry.current_traceparent() is None
# (FastAPI and redis-py import the OpenTelemetry API, and redis-py the SDK's metrics, by
# themselves: nothing of tracing is.)
tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation")
assert not [m for m in sys.modules if m.startswith(tracing)]
from opentelemetry import trace
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert not [t.name for t in threading.enumerate() if "Otel" in t.name or "Span" in t.name]
"""


def test_without_the_environment_nothing_is_set_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "REDIS_URL": "", "PYTHONPATH": str(ROOT)}
    done = run_python(NOTHING_WITHOUT_THE_ENVIRONMENT, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("environment", "requested"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_opt_in(environment: dict[str, str], requested: bool) -> None:
    assert telemetry.tracing_requested(environment) is requested


def test_the_secret_check_would_see_a_leak() -> None:
    leaky = ReceivedSpan("api", "x", "t", "s", "", {"http.url": "/login?password=hunter2"}, ())
    leaky = ReceivedSpan(**{**leaky.__dict__, "values": ("x", "/login?password=Hunter2")})
    assert _secrets_in([leaky], {"password": "hunter2"}) == ["api x: password"]
    assert re.fullmatch(r"[0-9a-f]{32}", _traceparent()[1])
